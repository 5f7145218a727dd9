"""The training side's sub-commands: `dnsvr features`, `similarity`, `train`, `eval`."""
