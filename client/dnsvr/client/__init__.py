"""Thin client SDK for dnsvr over Triton gRPC (tritonclient[grpc] + numpy only).

    from dnsvr.client import VideoSearchClient
    with VideoSearchClient("127.0.0.1:8001") as client:
        client.index("clip-1", "clip-1.mp4")
        client.index("clip-2", "clip-2.mp4", on_duplicate="skip")  # not stored if a near-duplicate is indexed
        for hit in client.search("query.mp4", top_k=10, rerank=0.1):
            print(hit.video_id, hit.score, hit.reranked, hit.segments)  # segments: where the copy is
        client.search_text("a man riding a bike at night", top_k=10)  # a pack with a text-video student
"""

from dnsvr.client.errors import (
    DnsvrError,
    Forbidden,
    InvalidVideo,
    NoTextSearch,
    NotFound,
    ServerError,
    ServerUnavailable,
)
from dnsvr.client.grpc_client import VideoSearchClient
from dnsvr.client.results import (
    Duplicate,
    Health,
    IndexOutcome,
    IndexResult,
    SearchHit,
    SearchResult,
    Segment,
)

__all__ = [
    "DnsvrError", "Duplicate", "Forbidden", "Health", "IndexOutcome", "IndexResult", "InvalidVideo", "NoTextSearch",
    "NotFound", "SearchHit", "SearchResult", "Segment", "ServerError", "ServerUnavailable", "VideoSearchClient",
]
