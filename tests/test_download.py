"""Hub downloads report bytes and speed as progress phase "download"; local folders download nothing."""

from __future__ import annotations

from ia3app.backbones.download import fetch, needs_download, reporting_bar


def test_byte_counts_become_download_events():
    events, now = [], [0.0]
    Bar = reporting_bar("org/model", events.append, every_s=1.0, clock=lambda: now[0])
    files = Bar(total=3, unit="it")  # huggingface_hub's per-file counter: not bytes, not reported
    files.update(1)
    bar = Bar(total=0, initial=0, unit="B", unit_scale=True, desc="Reconstructing (incomplete total...)")
    bar.total = 4_000_000_000  # huggingface_hub raises the total as each file's size becomes known
    now[0] = 2.0
    bar.update(1_000_000_000)
    now[0] = 2.5
    bar.update(100)  # within a second of the last event: not reported
    assert len(events) == 1 and events[0]["phase"] == "download"
    assert events[0]["message"] == "downloading org/model: 1.0 GB of 4.0 GB at 500.0 MB/s"


def test_local_folders_and_offline_mode_download_nothing(tmp_path, tiny_model_dir):
    events = []
    folder = tiny_model_dir("t0")
    assert not needs_download(str(folder))
    fetch(str(folder), None, events.append)
    fetch("org/surely-not-cached-model", None, events.append)  # the suite runs offline: the loader explains
    assert events == []
