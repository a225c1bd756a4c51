"""The command line: `sparsetune` (client commands over the REST API, `up` with its supervisor, `worker`)."""
