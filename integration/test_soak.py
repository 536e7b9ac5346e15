"""Soak, short: integration/soak.py for 60 s with 64 concurrent boto3 clients
against the session's gateway, every read checked byte for byte, then every
object left checked in the backend (ciphertext that the independent decoder
opens). `make soak` runs the same driver for 10 minutes on its own gateway.

What must hold: no request failed (not even one botocore retried), every
check passed, the filter's byte counters match what the clients sent and
received, and Envoy's RSS after the load is within soak.RSS_BOUND_MIB of its
RSS after the warm-up. The report is written to the test's tmp dir
(soak.json, soak.txt), printed through pytest's terminal reporter (so it
shows without -s) and put in every assertion message.
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak  # noqa: E402
from conftest import TEST_KEY_HEX  # noqa: E402

SECONDS = 60
CLIENTS = 64


def test_soak_60s_64_clients(gateway, make_s3, new_bucket, backend, tmp_path, request, capsys):
    # make_s3 is requested for its AWS environment isolation: the driver's
    # clients then run with botocore's defaults, whatever the developer has set.
    bucket = new_bucket("soak")
    lines: list[str] = []
    try:
        report = soak.run(gateway, bucket, seconds=SECONDS, clients=CLIENTS, seed=1,
                          backend=backend, kek_hex=TEST_KEY_HEX,
                          # The objects were read during the load: the final pass lists each
                          # prefix, decodes 2 stored objects per client with the independent
                          # decoder and cleans up (keeps the test near 75 s).
                          final_reads=False, final_stored=2, log=lines.append)
    finally:
        shutil.rmtree(backend.data_dir / bucket, ignore_errors=True)
    summary = soak.format_report(report)
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (tmp_path / "soak.txt").write_text("\n".join(lines + [summary]) + "\n")
    with capsys.disabled():  # shown with or without -s
        print("\n" + "\n".join(summary.splitlines()[:5]) + f"\n  (full report: {tmp_path / 'soak.json'})")
    request.node.user_properties.append(("soak", report["totals"]))

    t, rss = report["totals"], report["rss"]
    where = f"\n{summary}\nreport: {tmp_path / 'soak.json'}"
    assert t["errors"] == 0, f"{t['errors']} errors{where}"
    assert t["operations"] > 0 and t["verified_reads_and_checks"] > 0, f"nothing was done{where}"
    assert rss["growth_after_warmup_mib"] is not None and rss["growth_after_warmup_mib"] <= rss["bound_mib"], (
        f"Envoy RSS {rss['after_warmup_mib']} MiB after warm-up, {rss['end_mib']} MiB at the end "
        f"(bound +{rss['bound_mib']} MiB){where}")
    assert report["ok"], f"{report['failures']}{where}"
