"""Generated protobuf and gRPC code for the hdm.v1 wire contracts (`make protos`)."""
