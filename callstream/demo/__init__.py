"""``callstream demo``: the server, an example application and a voice bot in one command."""
