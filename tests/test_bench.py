"""`softlabels bench` end to end on tiny models (figures are checked in benchmarks/, never timed here)."""
import json

from softlabels.cli import main


def test_bench_writes_all_measurements(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--teacher", "resnet8", "--student", "resnet8", "--shape", "3", "12", "12",
                 "--batch-size", "8", "--num-classes", "4", "--steps", "2", "--rounds", "1", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    for key in ("images_per_s", "overhead_ratio", "cached_ratio", "data_ratio", "peak_memory_mb"):
        assert r[key] > 0, key
    assert set(r["images_per_s_by_variant"]) == {"framework", "bare", "cached", "student_only", "data"}
    assert r["cache_hits_while_timing"] > 0  # the cached variant really read the cache
    assert "overhead_ratio" in capsys.readouterr().out
