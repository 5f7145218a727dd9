"""This machine's servers: the Milvus processes, the local Triton and the two together (`LocalService`)."""
