"""Markdown for bench/RESULTS.md from the raw results of bench/run.py.

`python bench/report.py .run/bench/results.json [OUT]` re-renders a report
from saved raw results (the History section of OUT is kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HISTORY_MARK = "<!-- history: rows below are kept by bench/run.py; add notes freely -->"
HISTORY_HEAD = """## History

One row per full `make bench` run (appended automatically; quick runs are not
recorded). Record what changed between rows (an optimisation, a different
chunk size, a noisy machine) in the last column by hand.
All MB/s at 1 worker, 1 GiB single stream unless said; RSS: largest growth
over the baseline of any gateway transfer.

""" + HISTORY_MARK + """

| date | commit | load | no filter PUT / GET | ChaCha PUT / GET | AES-GCM PUT / GET | ChaCha 16 streams 2 workers PUT / GET | max RSS growth 1 GiB / 16 streams (MiB) | what changed |
|---|---|---|---|---|---|---|---|---|
"""

MiB = 1 << 20


def f0(x) -> str:
    return "–" if x is None else f"{x:.0f}"


def f1(x) -> str:
    return "–" if x is None else f"{x:.1f}"


def f2(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def size_name_b(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / MiB:g} MiB"


def verdict(ok) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def render(raw: dict, previous: str = "", append_history: bool = True) -> str:
    info, st, res = raw["info"], raw["settings"], raw["results"]
    thr = res.get("throughput", [])
    out: list[str] = []
    w = out.append

    def tput(setup, transfer, method):
        for r in thr:
            if r["setup"] == setup and r["transfer"] == transfer and r["method"] == method:
                return r
        return None

    def rate(setup, transfer, method):
        r = tput(setup, transfer, method)
        return r["mb_s"] if r else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    transfers = []
    for r in thr:
        if r["transfer"] not in transfers:
            transfers.append(r["transfer"])
    single_small, single_large, streams = (transfers + [None, None, None])[:3]

    w("# s3crypt benchmark results\n")
    w("Written by `make bench` (`bench/run.py`; see `bench/README.md` for what each table measures and how to "
      "read it). Everything above **History** is regenerated on every run; History rows are kept.\n")
    if st.get("quick"):
        w("**Quick run (`BENCH_QUICK=1`): smaller objects and fewer runs; not comparable with full runs.**\n")

    # -- machine ------------------------------------------------------------------
    w("## Machine and run\n")
    w("| | |\n|---|---|")
    dirty = info.get("git_dirty") or ""
    rows = [
        ("date", info.get("date")),
        ("command", f"`{info.get('command')}`"),
        ("duration", f"{info.get('duration_s', 0) / 60:.1f} min" + (
            f" (after waiting {info['waited_s'] / 60:.1f} min for the load to drop)" if info.get("waited_s", 0) >= 30 else "")),
        ("commit", f"{info.get('git')}" + (f" plus uncommitted changes in {len(dirty.splitlines())} file(s) of "
                                            "filter/, envoy/, scripts/" if dirty else " (clean)")),
        ("filter measured", f"`target/wasm32-wasip1/release/s3crypt_filter.wasm`, {info.get('wasm_size', 0) / 1024:.0f} KiB, "
                            f"sha256 {info.get('wasm_sha256')}…; chunk_size {st['chunk_size']}"),
        ("CPU", f"{info.get('nproc')} × {info.get('cpu')} (flags: {info.get('cpu_flags')})"),
        ("memory", info.get("memory")),
        ("kernel / OS", f"{info.get('kernel')} / {info.get('os')}"),
        ("Envoy", info.get("envoy")),
        ("rustc", info.get("rustc")),
        ("node (V8 codec bench)", res.get("node_version", "–")),
        ("rclone", res.get("rclone_version", "–")),
        ("backend", f"{info.get('backend', 's3s-fs ' + str(info.get('s3s_fs')))} on loopback, data on {info.get('scratch')}"),
        ("client", f"Python {info.get('python')} `http.client`, one connection per stream, SigV4 UNSIGNED-PAYLOAD, "
                   "bodies from memory-mapped tmpfs files"),
        ("load average (1/5/15 min)", f"at start {info.get('load_before')}, at the end {info.get('load_after')}"
                                      + (f" (at invocation {info['load_at_invocation']})"
                                         if info.get("load_at_invocation") != info.get("load_before") else "")),
        ("settings", f"median of {st['runs']} run(s) per figure (a figure whose first run took ≥ {st['long_s']:.0f} s "
                     f"is not repeated: see the runs columns); objects {single_small}, {single_large}, {streams}; "
                     f"{st['small_requests']} small requests and {st['range_requests']} range requests per figure "
                     f"over {st['threads']} threads"),
    ]
    for k, v in rows:
        w(f"| {k} | {v} |")
    w("")
    w("MB = 10^6 bytes; MiB = 2^20 bytes. Client, Envoy and backend share the same cores: "
      "see bench/README.md, *Reading the numbers*.\n")

    # -- targets -------------------------------------------------------------------
    w("## Targets (issue 6, issue 3)\n")
    w("| target | measured | verdict |\n|---|---|---|")
    if thr:
        cells = []
        ok_all = True
        for tr in (single_large, streams):
            for m in ("PUT", "GET"):
                r = ratio(rate("chacha1", tr, m), rate("plain1", tr, m))
                cells.append(f"{m} {tr}: {pct(r)}")
                ok_all = ok_all and r is not None and r >= 0.6
        w(f"| ChaCha20-Poly1305 PUT and GET ≥ 60 % of Envoy-without-filter, 1 worker | {'; '.join(cells)} | {verdict(ok_all)} |")
        cells, ok_all = [], True
        for tr in (single_large, streams):
            for m in ("PUT", "GET"):
                r = rate("aes1", tr, m)
                cells.append(f"{m} {tr}: {f0(r)} MB/s")
                ok_all = ok_all and r is not None and r >= 150
        w(f"| AES-256-GCM ≥ 150 MB/s per worker | {'; '.join(cells)} | {verdict(ok_all)} |")
    rss = res.get("rss", [])
    if rss:
        for tr, limit in ((single_large, 16), (streams, 64)):
            rows_ = [r for r in rss if r["transfer"] == tr and r["setup"] in ("chacha1", "aes1", "chacha2", "aes2")]
            if not rows_:
                continue
            worst = max(rows_, key=lambda r: r["growth"])
            cells = "; ".join(f"{r['setup']} {r['method']} {r['growth'] / MiB:+.1f}" for r in rows_)
            w(f"| Envoy RSS growth ≤ {limit} MiB for {tr} | worst {worst['growth'] / MiB:+.1f} MiB "
              f"({worst['label']}, {worst['method']}); all (MiB): {cells} | {verdict(worst['growth'] <= limit * MiB)} |")
    if thr and streams:
        cells = []
        for s1, s2 in (("plain1", "plain2"), ("chacha1", "chacha2"), ("aes1", "aes2")):
            for m in ("PUT", "GET"):
                cells.append(f"{s1[:-1]} {m} ×{f2(ratio(rate(s2, streams, m), rate(s1, streams, m)))}")
        chacha_scale = [ratio(rate("chacha2", streams, m), rate("chacha1", streams, m)) for m in ("PUT", "GET")]
        aes_scale = [ratio(rate("aes2", streams, m), rate("aes1", streams, m)) for m in ("PUT", "GET")]
        ok = all(x is not None and x >= 1.5 for x in chacha_scale + aes_scale)
        plain_scale = [ratio(rate("plain2", streams, m), rate("plain1", streams, m)) for m in ("PUT", "GET")]
        judgeable = all(x is not None and x >= 1.3 for x in plain_scale)
        w(f"| throughput scales with Envoy workers ({streams}, 2 workers / 1 worker; ≥ ×1.5 counted as scaling) | "
          f"{'; '.join(cells)} | "
          f"{verdict(ok) if ok or judgeable else 'not measurable here: Envoy without the filter does not scale either (client, backend and Envoy share 2 cores)'} |")
    rcl = res.get("rclone", [])
    if rcl and thr:
        cells, ok_all = [], True
        for r in rcl:
            if not r["client"].startswith("rclone crypt"):
                continue
            ours = rate("chacha1", r["transfer"], r["method"])
            via = next((x["mb_s"] for x in rcl if x["client"].startswith("rclone (plain")
                        and x["transfer"] == r["transfer"] and x["method"] == r["method"]), None)
            cells.append(f"{r['method']} {r['transfer']}: {f0(ours)} (rclone via the gateway {f0(via)}) vs {f0(r['mb_s'])}")
            ok_all = ok_all and ours is not None and ours > r["mb_s"]
        w(f"| faster than rclone crypt on the same transfers (MB/s: Python client through the gateway, ChaCha20-Poly1305, 1 worker (and rclone through the gateway) vs rclone crypt straight to the backend) | "
          f"{'; '.join(cells)} | {verdict(ok_all)} |")
    rng = res.get("range", [])
    if rng:
        rr = {(r["setup"], r["case"].split(" of ")[0] if "range" in r["case"] else "small"): r
              for r in rng if r.get("threads", 1) == 1}
        big, small = rr.get(("chacha1", "1 KiB range")), rr.get(("chacha1", "small"))
        pbig, psmall = rr.get(("plain1", "1 KiB range")), rr.get(("plain1", "small"))
        if big and small:
            lim = 2 * (st["chunk_size"] + 40) + 1024
            g = big["p50"] / small["p50"]
            p = pbig["p50"] / psmall["p50"] if pbig and psmall else None
            # The backend itself answers a range of a large file more slowly than a
            # small file: judge the gateway's ratio against Envoy-without-filter's.
            ok = (g <= 1.5 * (p or 1.0)) and big["backend_bytes"] <= lim
            w(f"| issue 3: a 1 KiB range of a {single_large or 'large'} object costs about the same as a 1 KiB GET "
              f"of a 1 KiB object (one request at a time; p50 ratio within ×1.5 of the same ratio without the "
              f"filter, which is the backend's own range cost; ≤ 2 chunks from the backend) | gateway p50 "
              f"{f2(big['p50'])} vs {f2(small['p50'])} ms (×{f2(g)}); without the filter "
              f"{f2(pbig['p50'] if pbig else None)} vs {f2(psmall['p50'] if psmall else None)} ms (×{f2(p)}); "
              f"{big['backend_bytes'] / 1024:.1f} KiB vs {small['backend_bytes'] / 1024:.1f} KiB from the backend "
              f"(whole object: {st['large_mib'] * 1024:.0f} KiB) | {verdict(ok)} |")
    w("")

    # -- throughput ----------------------------------------------------------------
    if thr:
        w("## Throughput\n")
        w("MB/s, median of the runs; ×base = ratio to Envoy without the filter with the same number of workers "
          "(the backend and 1-worker rows: 1 worker). `runs (min–max)` shows the spread. 2-worker setups are "
          "measured on the concurrent transfer only: one connection is served by one worker, so a single stream "
          "cannot use the second.\n")
        for tr in transfers:
            w(f"### {tr}\n")
            w("| setup | PUT MB/s | ×base | runs (min–max) | GET MB/s | ×base | runs (min–max) |")
            w("|---|---:|---:|---|---:|---:|---|")
            seen = []
            for r in thr:
                if r["transfer"] == tr and r["setup"] not in seen:
                    seen.append(r["setup"])
            for s in seen:
                base = "plain2" if s.endswith("2") else "plain1"
                cells = []
                label = None
                for m in ("PUT", "GET"):
                    r = tput(s, tr, m)
                    if not r:
                        cells += ["–", "–", "–"]
                        continue
                    label = r["label"]
                    cells += [f0(r["mb_s"]), f2(ratio(r["mb_s"], rate(base, tr, m))),
                              f"{r['runs']} ({f0(r['min'])}–{f0(r['max'])})"]
                w(f"| {label} | " + " | ".join(cells) + " |")
            w("")

    dig = res.get("digests", [])
    if dig:
        w("### PUT with the integrity headers clients send\n")
        w("The filter verifies `Content-MD5`, a hex `x-amz-content-sha256` and `x-amz-checksum-*` against the "
          "plaintext inside the VM (they cannot be forwarded: the backend sees ciphertext). PUT of "
          f"{size_name_b(dig[0]['size'])}, median of {dig[0]['runs']} run(s), MB/s.\n")
        variants = []
        for r in dig:
            if r["variant"] not in variants:
                variants.append(r["variant"])
        w("| setup | " + " | ".join(variants) + " |")
        w("|---|" + "---:|" * len(variants))
        for key in dict.fromkeys(r["setup"] for r in dig):
            label = next(r["label"] for r in dig if r["setup"] == key)
            w(f"| {label} | " + " | ".join(
                f0(next((r["mb_s"] for r in dig if r["setup"] == key and r["variant"] == v), None)) for v in variants) + " |")
        w("")

    # -- CPU ---------------------------------------------------------------------------
    if thr and any(r.get("cpu_s_per_gb") for r in thr):
        w("## Where the CPU goes\n")
        w("CPU seconds per GB moved (user + system, from /proc/PID/stat, all runs), for Envoy (all its threads), "
          "the backend and the Python client. The three share the machine's cores, so wall-clock MB/s above "
          "also depends on how much the other two need. *Envoy MB/s per core* = bytes / Envoy CPU time: what "
          "one worker could move with a core to itself, the fairest per-worker figure on a small machine.\n")
        w("| setup | transfer | Envoy s/GB | backend s/GB | client s/GB | Envoy MB/s per core | ×base |")
        w("|---|---|---:|---:|---:|---:|---:|")
        for tr in (single_large, streams):
            for m in ("PUT", "GET"):
                for r in thr:
                    if r["transfer"] != tr or r["method"] != m:
                        continue
                    c = r.get("cpu_s_per_gb", {})
                    env = c.get("envoy")
                    per_core = 1000 / env if env else None
                    base = tput("plain2" if r["setup"].endswith("2") else "plain1", tr, m)
                    bc = (base or {}).get("cpu_s_per_gb", {}).get("envoy")
                    w(f"| {r['label']} | {m} {tr} | {f2(env)} | {f2(c.get('backend'))} | {f2(c.get('client'))} | "
                      f"{f0(per_core)} | {f2(ratio(per_core, 1000 / bc if bc else None)) if env else '–'} |")
        w("")

    # -- memory ----------------------------------------------------------------------
    if rss:
        w("## Envoy memory\n")
        w("Resident set of the Envoy process (all workers, V8 and the wasm VMs): *idle* right after start, "
          "*baseline* after a warm-up (8 × 1 MiB round trips on 4 connections), *peak* = VmHWM during the "
          "transfer (reset via /proc/PID/clear_refs before it; cross-checked by sampling VmRSS every 50 ms), "
          "in the first run, where each Envoy does, in this order, PUT and GET of 64 MiB, of 1 GiB, then of "
          "16 × 64 MiB. Envoy keeps memory it has allocated (tcmalloc; V8 never shrinks a wasm memory), so "
          "growth = peak − baseline includes what earlier transfers left: the GET rows include the PUT "
          "before them. The last column subtracts the growth of Envoy without the filter (same transfer, "
          "same workers): the filter's share.\n")
        w("| setup | transfer | idle MiB | baseline MiB | peak MiB | growth MiB | growth minus Envoy-without-filter's |")
        w("|---|---|---:|---:|---:|---:|---:|")
        for r in rss:
            base = "plain2" if r["setup"].endswith("2") else "plain1"
            b = next((x for x in rss if x["setup"] == base and x["transfer"] == r["transfer"]
                      and x["method"] == r["method"]), None)
            extra = f"{(r['growth'] - b['growth']) / MiB:+.1f}" if b and r["setup"] != base else ""
            w(f"| {r['label']} | {r['method']} {r['transfer']} | {f1(r['idle'] / MiB)} | {f1(r['baseline'] / MiB)} | "
              f"{f1(r['peak'] / MiB)} | {r['growth'] / MiB:+.1f} | {extra} |")
        w("")

    # -- rclone ----------------------------------------------------------------------
    if rcl:
        w("## The peer: rclone crypt\n")
        w(f"{res.get('rclone_conf', '')}. Wall time of the rclone command (start-up included, ~0.1 s), "
          f"default rclone settings except `--transfers {st['streams']}` for the folder of {st['streams']} files "
          "and `--ignore-times --no-traverse`. rclone uploads files above 200 MiB in 5 MiB parts, 4 at a time, "
          "and downloads large files in 4 ranged streams: it uses more connections than the one-stream rows of "
          "the Python client. The last rows repeat the gateway's figures from the throughput tables for "
          "comparison.\n")
        cols = []
        for r in rcl:
            if r["transfer"] not in cols:
                cols.append(r["transfer"])
        w("| client | " + " | ".join(f"PUT {c} | GET {c}" for c in cols) + " |")
        w("|---|" + "---:|" * (2 * len(cols)))
        clients = []
        for r in rcl:
            if r["client"] not in clients:
                clients.append(r["client"])
        for c in clients:
            cells = []
            for tr in cols:
                for m in ("PUT", "GET"):
                    r = next((x for x in rcl if x["client"] == c and x["transfer"] == tr and x["method"] == m), None)
                    cells.append(f0(r["mb_s"]) + (f" ({r['runs']})" if r and r["runs"] != st["runs"] else "") if r else "–")
            w(f"| {c} | " + " | ".join(cells) + " |")
        for s, label in (("chacha1", "Python client -> s3crypt gateway (ChaCha20-Poly1305, 1 worker)"),
                         ("plain1", "Python client -> Envoy without the filter (1 worker)"),
                         ("direct", "Python client -> backend directly")):
            if thr:
                w(f"| {label} | " + " | ".join(f0(rate(s, tr, m)) for tr in cols for m in ("PUT", "GET")) + " |")
        w("")

    # -- latency -----------------------------------------------------------------------
    lat = res.get("latency", [])
    if lat:
        w("## Small objects\n")
        w(f"{st['small_requests']} requests per row over {st['threads']} threads (one keep-alive connection each), "
          "PUTs over 64 keys, GETs of those keys. Latency in ms as seen by the client, "
          "req/s = requests / wall time.\n")
        w("| setup | size | PUT p50 | PUT p99 | PUT req/s | GET p50 | GET p99 | GET req/s | failed requests |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        keys = []
        for r in lat:
            if (r["setup"], r["size"]) not in keys:
                keys.append((r["setup"], r["size"]))
        for s, size in keys:
            cells, label, errs = [], "", 0
            for m in ("PUT", "GET"):
                r = next((x for x in lat if x["setup"] == s and x["size"] == size and x["method"] == m), None)
                if r:
                    label = r["label"]
                    errs += r.get("errors", 0)
                    cells += [f2(r["p50"]), f2(r["p99"]), f0(r["rps"])]
                else:
                    cells += ["–"] * 3
            cells.append(str(errs))
            w(f"| {label} | {size // 1024} KiB | " + " | ".join(cells) + " |")
        w("")

    # -- range ---------------------------------------------------------------------------
    if rng:
        w("## Range reads\n")
        w(f"{st['range_requests'] // 2} GETs one at a time (1 thread), then {st['range_requests']} over "
          f"{st['threads']} threads; ranges `bytes=o-(o+1023)` at random "
          "offsets o. Bytes from the backend = Envoy's `cluster.s3_backend.upstream_cx_rx_bytes_total` "
          "(response headers included) divided by the requests; backend requests likewise from "
          "`upstream_rq_total`. A few ranges (first chunk, across a chunk boundary, the last KiB) are first "
          "compared byte for byte with the source.\n")
        w("| setup | request | threads | p50 ms | p99 ms | req/s | bytes from the backend per request | backend requests per request |")
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rng:
            w(f"| {r['label']} | {r['case']} | {r.get('threads', st['threads'])} | {f2(r['p50'])} | {f2(r['p99'])} | {f0(r['rps'])} | "
              f"{r['backend_bytes']:.0f} | {r['backend_requests']:.2f} |")
        w("")

    # -- codec -----------------------------------------------------------------------------
    for key, title, text in (
            ("codec", "The codec alone, native (criterion)",
             f"`{res.get('codec_command', 'cargo bench -p s3crypt-filter --bench codec')}`: seal (SegmentSealer) and "
             "open (ChunkOpener) 64 MiB pushed in 1 MiB pieces, MB/s from criterion's median "
             "(target/criterion/codec/*/*/new/estimates.json). Native code uses AES-NI/PCLMULQDQ and AVX2 where "
             "the CPU has them."),
            ("wasm", "The codec inside V8",
             f"The same SegmentSealer/ChunkOpener compiled to wasm32-wasip1 with +simd128 (bench/wasm-codec), "
             f"{st.get('wasm_mib')} MiB per run, median of {st.get('wasm_runs')} runs after a warm-up, timed "
             f"from JavaScript in node {res.get('node_version', '')}. Envoy embeds its own V8 build; node's is "
             "the closest runtime available outside Envoy: no AES instructions, same kind of JIT.")):
        rowsk = res.get(key, [])
        if not rowsk:
            continue
        w(f"## {title}\n")
        w(text + "\n")
        combos = [("seal", "chacha20-poly1305"), ("open", "chacha20-poly1305"), ("seal", "aes-256-gcm"),
                  ("open", "aes-256-gcm")]
        w("| chunk size | " + " | ".join(f"{s} {o} MB/s" for o, s in combos) + " |")
        w("|---|" + "---:|" * len(combos))
        for chunk in sorted({r["chunk"] for r in rowsk}):
            cells = []
            for o, s in combos:
                r = next((x for x in rowsk if x["chunk"] == chunk and x["op"] == o and x["suite"] == s), None)
                cells.append(f0(r["mb_s"]) if r else "–")
            w(f"| {chunk // 1024} KiB | " + " | ".join(cells) + " |")
        w("")

    notes = res.get("notes", [])
    secs = res.get("section_seconds", {})
    w("## Notes\n")
    if secs:
        loads = res.get("section_load", {})
        w("Time per section (and the load average when it started): " + ", ".join(
            f"{k} {v:.0f} s ({loads.get(k, '?')})" for k, v in secs.items()) + ".\n")
    for n in notes:
        w(f"* {n}")
    w(previous_notes(previous))

    # -- history ------------------------------------------------------------------------------
    if HISTORY_MARK in previous:
        before, after = previous.split(HISTORY_MARK, 1)
        at = before.rfind("## History")
        head = before[at:] if at >= 0 else HISTORY_HEAD.split(HISTORY_MARK)[0]
        history = head + HISTORY_MARK + after
    else:
        history = HISTORY_HEAD
    if append_history and thr and not st.get("quick"):
        def pair(s, tr):
            return f"{f0(rate(s, tr, 'PUT'))} / {f0(rate(s, tr, 'GET'))}"

        def worst(tr):
            g = [r["growth"] for r in rss if r["transfer"] == tr and r["setup"] != "plain1" and r["setup"] != "plain2"]
            return f1(max(g) / MiB) if g else "–"
        row = (f"| {info.get('date')} | {info.get('git')}{'+' if dirty else ''} | {info.get('load_before')} | "
               f"{pair('plain1', single_large)} | {pair('chacha1', single_large)} | {pair('aes1', single_large)} | "
               f"{pair('chacha2', streams)} | {worst(single_large)} / {worst(streams)} | |")
        history = history.rstrip("\n") + "\n" + row + "\n"
    w(history.rstrip("\n") + "\n")
    return "\n".join(out)


NOTES_MARK = "<!-- notes: kept by bench/run.py -->"


def previous_notes(previous: str) -> str:
    """Hand-written notes between NOTES_MARK and the History section survive regeneration."""
    if NOTES_MARK not in previous:
        return NOTES_MARK + "\n"
    text = previous.split(NOTES_MARK, 1)[1]
    text = text.split("## History", 1)[0]
    return NOTES_MARK + text.rstrip("\n") + "\n"


if __name__ == "__main__":
    raw = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("RESULTS.md")
    prev = out.read_text() if out.exists() else ""
    out.write_text(render(raw, prev, append_history=False))
