"""Process-level reliability suite: real Redis, web and worker subprocesses, fake upstreams."""
