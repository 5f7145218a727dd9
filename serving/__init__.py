"""Server side: the Milvus store, the Triton python-backend adapters and the plain pipeline code they call,
this machine's launchers and the `dnsvr` command line."""
