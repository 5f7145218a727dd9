"""The Milvus video store: settings, schema and the VideoStore interface over Milvus Lite and servers."""
