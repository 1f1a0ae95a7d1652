"""The results store and live feed on SQLite and PostgreSQL, and the service's configuration."""

from __future__ import annotations

import threading

import pytest
from results_support import ANOMALOUS, BACKENDS, OK, dataset, make_result
from sqlalchemy import text

from services.config import ConfigError, load_config
from services.results.config import AuthConfig, ResultsConfig, TlsConfig
from services.results.feed import LiveFeed
from services.results.store import IncomingResult, Rejected, ResultQuery, Store, StoreError, results_table, row_values
from services.results.tokens import PageKey, TokenError, decode_cursor, decode_page_token, encode_cursor, encode_page_token


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path}/results.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = Store(url)
    s.migrate()
    yield s
    s.dispose()


def _put(store: Store, results) -> None:
    store.insert([IncomingResult(r) for r in results])


def test_schema_is_versioned_and_a_newer_schema_is_refused(store):
    assert store.migrate() == store.schema_version() == 1  # migrating twice is harmless
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(StoreError, match="newer"):
        store.migrate()


def test_a_duplicate_delivery_changes_nothing(store):
    original = make_result("f-1", score=0.2, verdict=OK)
    first = store.insert([IncomingResult(original)])
    changed = make_result("f-1", score=0.9, verdict=ANOMALOUS, line_id="line-z")
    again = store.insert([IncomingResult(changed), IncomingResult(original), IncomingResult(make_result("f-2"))])
    assert (first.inserted, first.duplicates) == (["f-1"], 0)
    assert (again.inserted, again.duplicates) == (["f-2"], 2)
    stored = store.get("f-1", include_images=True)
    assert stored.result.image_score == pytest.approx(0.2) and stored.result.line_id == "line-a"
    assert store.images("f-1") is None  # the first delivery was normal: its PNGs were not kept
    assert store.count() == 2


@pytest.mark.parametrize("policy, kept", [("anomalous", {"bad"}), ("all", {"bad", "good"}), ("none", set())])
def test_heatmap_retention_policy(tmp_path, policy, kept):
    store = Store(f"sqlite:///{tmp_path}/r.db", heatmap_retention=policy)
    store.migrate()
    _put(store, [make_result("bad", verdict=ANOMALOUS), make_result("good", verdict=OK)])
    assert {f for f in ("bad", "good") if store.images(f) is not None} == kept
    assert {f for f in ("bad", "good") if store.get(f).has_images} == kept
    store.dispose()


def test_rejected_records_are_kept_once_with_their_reason(store):
    bad = Rejected("inspection.results", 2, 41, "not an InspectionResult", b"\xff\x00")
    store.insert([], [bad])
    store.insert([], [bad])  # re-delivered after a restart
    assert store.rejected() == [bad]


def test_sql_filter_and_live_filter_agree(store):
    data = dataset(120, seed=3)
    _put(store, data)
    store.analyze()  # fresh planner statistics change plans, never answers
    mid = sorted(r.captured_at.ToMicroseconds() for r in data)[60]
    queries = [
        ResultQuery(line_id="line-a"),
        ResultQuery(camera_id="cam-2", verdict=ANOMALOUS),
        ResultQuery(product="gear", min_score=0.3),
        ResultQuery(captured_after_us=mid, line_id="line-b"),
        ResultQuery(captured_before_us=mid, verdict=OK),
    ]
    for q in queries:
        in_sql = [row.result.frame_id for row in store.query(q, None, 1000)]
        in_python = sorted((r for r in data if q.matches(r)), key=lambda r: (r.captured_at.ToMicroseconds(), r.frame_id))
        assert in_sql == [r.frame_id for r in in_python] and in_sql, q


def test_keyset_pages_break_capture_time_ties_by_frame_id(store):
    same = 1_800_000_000_000_000
    _put(store, [make_result(f"f-{c}", captured_us=same) for c in "dbca"] + [make_result("f-0", captured_us=same - 1)])
    page = store.query(ResultQuery(), PageKey(same, "f-b"), 10)
    assert [row.result.frame_id for row in page] == ["f-c", "f-d"]


def test_writers_take_turns_so_commit_order_is_seq_order(store):
    """A second writer waits for the first one's commit; otherwise a stream could skip a row."""
    done = threading.Event()
    writer = threading.Thread(target=lambda: (_put(store, [make_result("late")]), done.set()))
    with store._write_transaction() as first:
        first.execute(results_table.insert(), [row_values(IncomingResult(make_result("early")), False, 0)])  # seq taken
        writer.start()
        assert not done.wait(0.5), "the second writer committed while the first still held its transaction"
    assert done.wait(10)
    writer.join()
    seqs = {row.result.frame_id: row.seq for row in store.after_seq(0, 10)}
    assert seqs["early"] < seqs["late"]


def _follow_to_the_end(feed: LiveFeed, position: int) -> list[str]:
    got = []
    while True:
        read = feed.read(position)
        items, position = read if read is not None else feed.catch_up(position)
        if not items:
            return got
        got += [item.row.result.frame_id for item in items]


def test_live_feed_serves_every_row_once_across_catch_up_and_trimming(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/feed.db")
    store.migrate()
    feed = LiveFeed(store, page=4, capacity=5)
    woken = []
    feed.add_listener(lambda: woken.append(1))
    frames = [f"f-{i:03d}" for i in range(60)]
    for start in range(0, 60, 6):
        _put(store, [make_result(f) for f in frames[start : start + 6]])
        assert feed.refresh() == 6  # the feed trims itself to 5..10 rows: early rows only come from the database
    assert len(woken) == 10 and feed.read(0) is None
    assert _follow_to_the_end(feed, 0) == frames
    assert _follow_to_the_end(feed, store.get("f-057").seq) == ["f-058", "f-059"]  # inside the in-memory window
    store.dispose()


# --- tokens and configuration ----------------------------------------------------


def test_tokens_round_trip_and_reject_each_other():
    key = PageKey(1_700_000_000_123_456, "frame/ü-1")
    token = encode_page_token(key, "abc")
    assert decode_page_token(token, "abc") == key
    assert decode_cursor(encode_cursor(42)) == 42
    for bad in (lambda: decode_cursor(token), lambda: decode_page_token(encode_cursor(1), "abc"), lambda: decode_cursor("%%%")):
        with pytest.raises(TokenError):
            bad()


def test_example_config_loads_and_typos_are_errors(tmp_path):
    cfg = load_config(ResultsConfig, "config/results.yaml")
    assert cfg.database_url.startswith("sqlite:///") and cfg.auth.load_tokens() == ["dev-token"]
    (tmp_path / "bad.yaml").write_text("page_size_maximum: 5\n")
    with pytest.raises(ConfigError, match="page_size_maximum"):
        load_config(ResultsConfig, tmp_path / "bad.yaml")
    (tmp_path / "bad.yaml").write_text("heatmap_retention: sometimes\n")
    with pytest.raises(ConfigError, match="heatmap_retention"):
        load_config(ResultsConfig, tmp_path / "bad.yaml")


def test_auth_is_never_off_by_accident(tmp_path):
    with pytest.raises(ConfigError, match="no tokens"):
        AuthConfig().load_tokens()
    assert AuthConfig(allow_unauthenticated=True).load_tokens() == []
    (tmp_path / "tokens").write_text("# MES clients\nalpha\n\nbeta\n")
    assert AuthConfig(tokens=["x"], tokens_file=str(tmp_path / "tokens")).load_tokens() == ["x", "alpha", "beta"]
    with pytest.raises(ConfigError, match="not found"):
        AuthConfig(tokens_file=str(tmp_path / "missing")).load_tokens()


def test_tls_settings_must_be_complete():
    with pytest.raises(ValueError, match="go together"):
        TlsConfig(cert_file="server.pem")
    with pytest.raises(ValueError, match="client_ca_file"):
        TlsConfig(cert_file="s.pem", key_file="s.key", require_client_cert=True)
