"""Policy: the YAML a user writes, compiled into the frozen table the server routes on."""
