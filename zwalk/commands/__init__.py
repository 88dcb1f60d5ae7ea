"""One module per `zwalk` command."""
