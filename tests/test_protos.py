"""The committed generated code matches the .proto files, and the contracts load."""

from protos import generate


def test_generated_code_matches_protos():
    assert generate.drift() == [], "run `make protos` and commit the result"


def test_service_is_registered_under_the_proto_package():
    from protos.hdm.v1 import results_service_pb2

    service = results_service_pb2.DESCRIPTOR.services_by_name["ResultsService"]
    assert service.full_name == "hdm.v1.ResultsService"
    assert {m.name for m in service.methods} >= {"GetResult", "QueryResults", "StreamResults", "GetHeatmap", "GetLineStats"}
