"""An MES-side client that knows only the .proto files (no code from this project).

Run as `python client.py STUBS_DIR TARGET TOKEN`: STUBS_DIR holds Python stubs generated
from protos/hdm/v1/*.proto with plain protoc; the script calls every RPC of
hdm.v1.ResultsService and prints one JSON object of what it saw.
"""

import json
import sys

import grpc


def main(stubs: str, target: str, token: str) -> None:
    sys.path.insert(0, stubs)
    from hdm.v1 import results_pb2, results_service_pb2, results_service_pb2_grpc

    stub = results_service_pb2_grpc.ResultsServiceStub(grpc.insecure_channel(target))
    auth = (("authorization", f"Bearer {token}"),)
    seen = {"stubs_used": results_service_pb2.__file__.startswith(stubs)}

    everything, token_ = [], ""
    while True:  # QueryResults, page by page
        page = stub.QueryResults(results_service_pb2.QueryResultsRequest(page_size=7, page_token=token_), metadata=auth)
        everything += [r.frame_id for r in page.results]
        token_ = page.next_page_token
        if not token_:
            break
    seen["query_ids"] = everything
    anomalous = stub.QueryResults(results_service_pb2.QueryResultsRequest(
        filter=results_service_pb2.ResultFilter(verdict=results_pb2.VERDICT_ANOMALOUS), page_size=100), metadata=auth)
    seen["anomalous_ids"] = [r.frame_id for r in anomalous.results]

    first = stub.GetResult(results_service_pb2.GetResultRequest(frame_id=everything[0]), metadata=auth)
    seen["get"] = {"frame_id": first.frame_id, "line_id": first.line_id, "verdict": first.verdict}
    heatmap = stub.GetHeatmap(results_service_pb2.GetHeatmapRequest(frame_id=seen["anomalous_ids"][0]), metadata=auth)
    seen["heatmap_is_png"] = heatmap.heatmap_png.startswith(b"\x89PNG") and heatmap.overlay_png.startswith(b"\x89PNG")
    stats = stub.GetLineStats(results_service_pb2.GetLineStatsRequest(line_id=first.line_id), metadata=auth)
    seen["stats"] = {"line_id": stats.line_id, "frames": stats.frames, "anomalies": stats.anomalies}

    # StreamResults from the start cursor of an earlier query is not offered; a live stream
    # from "now" must stay open: read with a short deadline and expect DEADLINE_EXCEEDED.
    try:
        for _ in stub.StreamResults(results_service_pb2.StreamResultsRequest(), metadata=auth, timeout=1.0):
            pass
    except grpc.RpcError as exc:
        seen["stream_status"] = exc.code().name

    codes = {}
    for name, call in {
        "no_token": lambda: stub.GetResult(results_service_pb2.GetResultRequest(frame_id=everything[0])),
        "unknown_frame": lambda: stub.GetResult(results_service_pb2.GetResultRequest(frame_id="nope"), metadata=auth),
        "huge_page": lambda: stub.QueryResults(results_service_pb2.QueryResultsRequest(page_size=10**6), metadata=auth),
        "bad_token": lambda: stub.QueryResults(results_service_pb2.QueryResultsRequest(page_token="%%%"), metadata=auth),
    }.items():
        try:
            call()
            codes[name] = "OK"
        except grpc.RpcError as exc:
            codes[name] = exc.code().name
    seen["codes"] = codes
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:4])
