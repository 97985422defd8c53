"""Networks shared by modes, tools, benchmarks and tests: the tiny offline builders and the SSL wrappers."""
