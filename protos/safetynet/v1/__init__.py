"""Generated protobuf and gRPC code for the ``safetynet.v1`` contract (see protos/gen_protos.py)."""
