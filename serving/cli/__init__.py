"""The `dnsvr` command line: the entry point and the serving side's sub-commands."""
