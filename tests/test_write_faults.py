"""A write that fails part-way (a real file-size limit: RLIMIT_FSIZE, EFBIG, as a full disk fails them) leaves no
temporary behind and names the file or folder it was writing, not the stage's output folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

from pipeline.outputs import ADVICE

ROOT = Path(__file__).resolve().parents[1]

# Writes past 50 kB fail with EFBIG (SIGXFSZ ignored, as Python does by default); the script prints the one line
# pipeline.cli would print.
LIMITED = """
import resource, signal, sys
from pathlib import Path
from pipeline.outputs import os_error_line
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
here = Path(sys.argv[1])
try:
{body}
except OSError as e:
    print(os_error_line(e, "data/stage"))
"""


def _limited(body: str, here: Path, limit: int = 50_000) -> str:
    script = LIMITED.format(body="\n".join("    " + line for line in body.strip().splitlines())).replace("50_000", str(limit))
    proc = subprocess.run([sys.executable, "-c", script, str(here)], capture_output=True, text=True, timeout=300,
                          cwd=here, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_json_file_cut_short_by_a_full_disk_leaves_no_temporary_and_names_itself(tmp_path):
    """Seen with the samples on a small tmpfs: PUGC's failed run left
    .prefpipe/checkpoints/pugc/gate_scorer/.computed_with.json.tmp-*, and said `cannot write data/pugc`."""
    line = _limited("""
from pipeline.files import write_json_atomic
write_json_atomic({"rows": ["x" * 100] * 1000}, here / "ck" / "computed_with.json")
""", tmp_path)
    assert line == f"cannot write {tmp_path / 'ck' / 'computed_with.json'}: File too large (EFBIG); {ADVICE[errno.EFBIG]}"
    assert list((tmp_path / "ck").iterdir()) == []


def test_a_checkpoint_file_cut_short_by_a_full_disk_names_the_checkpoint_folder(tmp_path):
    """A model step's finished batches are checkpointed beside the project's data (.prefpipe/checkpoints): a
    full disk there was reported as the stage's output folder, which may be another disk."""
    line = _limited("""
import pyarrow as pa
from pipeline.execute import Checkpoint, map_batches
from tests.llm_configs import execution_config
rows = pa.table({"id": [f"r{i}" for i in range(40)]})
import hashlib
hexes = lambda i: "".join(hashlib.sha256(f"{i}-{j}".encode()).hexdigest() for j in range(100))  # 6.4 kB, incompressible
noise = lambda batch: batch.append_column("text", pa.array([hexes(i) for i in range(batch.num_rows)]))
map_batches(rows, noise, execution=execution_config(batch_size=40, checkpoint_rows=40, target_shard_bytes=1 << 20,
            row_group_bytes=1 << 20, spill_bytes=1 << 20, on_gate_failure="error"),
            checkpoint=Checkpoint(here / "ck", fingerprint="fp"))
""", tmp_path)
    assert line == f"cannot write {tmp_path / 'ck'}: File too large (EFBIG); {ADVICE[errno.EFBIG]}"
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["computed_with.json"]


def test_an_audit_report_cut_short_by_a_full_disk_keeps_the_last_report(tmp_path):
    """`prefpipe audit --json` on a full disk (a 64 kB tmpfs) left an empty report.json where the last one was."""
    from stages.export import build_release
    from tests.export_fixtures import export_cfg, standard_methods

    standard_methods(tmp_path)
    build_release(export_cfg(), tmp_path, tmp_path / "data" / "release", "fp")
    (tmp_path / "elsewhere").mkdir()  # no params.yaml: the release's own checks
    last = tmp_path / "elsewhere" / "report.json"
    last.write_text('{"passed": true}\n')
    out = _limited("""
from pipeline.cli import main
print(main(["audit", str(here.parent / "data" / "release"), "--json", "report.json"]))
""", tmp_path / "elsewhere", limit=1000)
    assert out.splitlines()[-1] == "2", out
    assert last.read_text() == '{"passed": true}\n'
    assert sorted(p.name for p in last.parent.iterdir()) == ["report.json"]


def test_a_full_disk_writing_a_stage_metrics_names_the_output_not_the_staging_folder(tmp_path):
    """A full disk as ingest wrote its metrics said `cannot write data/ingest/.staging/metrics.json`: a folder the user
    never made, gone by the time they look. The line names the output the stage was writing."""
    line = _limited("""
from pipeline.files import write_json_atomic
from pipeline.outputs import stage_outputs
with stage_outputs(here / "ingest") as out:
    write_json_atomic({"rows": ["x" * 100] * 1000}, out / "metrics.json")
""", tmp_path)
    assert line == f"cannot write {tmp_path / 'ingest' / 'metrics.json'}: File too large (EFBIG); {ADVICE[errno.EFBIG]}"
    assert list((tmp_path / "ingest").iterdir()) == []  # nothing staged is left, no temporary
