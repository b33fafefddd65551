"""The gRPC service of the Open Inference Protocol (``inference.GRPCInferenceService``), as Ray
Serve's gRPC proxy registers it: `add_inference_service` is the servicer function named in
Serve's gRPC options (`fastres.scale.serve.grpc_options`).

Why not tritonclient's generated ``add_GRPCInferenceServiceServicer_to_server``: its messages'
classes say they live in a module ``grpc_service_pb2`` that does not exist (tritonclient builds
them under that name inside ``tritonclient.grpc.service_pb2``), and Serve's proxy pickles the
request it has parsed to send it to a replica: unpicklable. Here the proxy is given the methods
without a deserializer, so it forwards each request's bytes as they came, and the replica parses
them (`parse`) with tritonclient's message classes, once. Answers go back as messages, which
Serve serializes. Only the methods fastres answers are registered: any other is gRPC's own
UNIMPLEMENTED.
"""
from __future__ import annotations

SERVICE = "inference.GRPCInferenceService"
# RPC -> its request message's name in tritonclient.grpc.service_pb2
METHODS = {"ServerLive": "ServerLiveRequest", "ServerReady": "ServerReadyRequest",
           "ModelReady": "ModelReadyRequest", "ServerMetadata": "ServerMetadataRequest",
           "ModelMetadata": "ModelMetadataRequest", "ModelInfer": "ModelInferRequest"}


def _unused(request, context):  # Serve's proxy replaces every handler with its own
    raise NotImplementedError


def add_inference_service(servicer, server) -> None:
    """Register the service's methods on `server` (Serve's gRPC proxy server), requests and
    answers as bytes; `servicer` is not used (the signature of a generated
    ``add_..._to_server``, which Serve calls)."""
    import grpc

    handlers = {name: grpc.unary_unary_rpc_method_handler(_unused) for name in METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def parse(method: str, request):
    """The request message of `method` from the bytes the proxy forwarded (a message already
    parsed, as a test may pass, is returned as it is)."""
    if not isinstance(request, (bytes, bytearray, memoryview)):
        return request
    from tritonclient.grpc import service_pb2

    return getattr(service_pb2, METHODS[method]).FromString(bytes(request))
