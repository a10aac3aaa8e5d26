"""docs/plugins.md, run step by step: every file block is written, every `$` command run, in the guide's order.

A file block is a fenced python/toml/yaml block whose first line is ``# <path>``; a console block holds
``$ command`` lines, each followed by lines its output must contain, in that order (``...`` matches
anything). ``pip install -e DIR`` is run as ``pip install --target SITE DIR`` (an editable install would
write into this test environment); the package is then found through its entry point exactly as after
the guide's install: ``SITE`` is on the path of every command and nothing else registers it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
FILE_HEADER = re.compile(r"^# (\S+\.(?:py|toml|yaml))\b")


def guide_steps(text: str) -> list[tuple[str, str, object]]:
    """("file", path, content) and ("command", command line, [expected output lines]) in document order."""
    steps: list[tuple[str, str, object]] = []
    for lang, body in FENCE.findall(text):
        if lang in ("python", "toml", "yaml"):
            header = FILE_HEADER.match(body)
            assert header, f"every {lang} block of the guide must be a file (first line '# path'):\n{body[:200]}"
            steps.append(("file", header.group(1), body))
        elif lang == "console":
            for line in body.splitlines():
                if line.startswith("$ "):
                    steps.append(("command", line[2:], []))
                elif line.strip():
                    steps[-1][2].append(line)
    return steps


def expect_lines(output: str, expected: list[str], command: str) -> None:
    """Each expected line is an output line (whitespace-normalised, ``...`` = anything), in order."""
    lines = [" ".join(x.split()) for x in output.splitlines()]
    i = 0
    for want in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in " ".join(want.split()).split("...")) + "$")
        while i < len(lines) and not pattern.match(lines[i]):
            i += 1
        assert i < len(lines), f"`{command}` printed no line matching {want!r} (after the previous):\n{output}"
        i += 1


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    """Run the whole guide once; returns (work dir, {command: stdout})."""
    work = tmp_path_factory.mktemp("guide")
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "FVDM_STRICT_PLUGINS": "1"}
    outputs: dict[str, str] = {}
    for kind, what, payload in guide_steps(GUIDE.read_text()):
        if kind == "file":
            path = work / what
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(payload)
            continue
        argv = shlex.split(what)
        if argv[:3] == ["pip", "install", "-e"]:
            argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), argv[3]]
        elif argv[0] == "fvdm":
            argv = [sys.executable, "-m", "fvdm", *argv[1:]]
        elif argv[0] == "pytest":
            argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv[1:]]
        else:
            pytest.fail(f"the guide runs a command this test does not know how to run: {what}")
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"guide step `{what}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        expect_lines(proc.stdout, payload, what)
        outputs[what] = proc.stdout
    return work, outputs


def test_guide_has_the_three_plugins_and_runs_every_step(walked):
    work, outputs = walked
    steps = guide_steps(GUIDE.read_text())
    files = {what for kind, what, _ in steps if kind == "file"}
    assert {"my-fvdm-ext/my_fvdm_ext/strategy.py", "my-fvdm-ext/my_fvdm_ext/schedule.py",
            "my-fvdm-ext/my_fvdm_ext/task.py", "my-fvdm-ext/pyproject.toml"} <= files
    assert len(outputs) == sum(kind == "command" for kind, _, _ in steps)


def test_sampling_used_the_plugin_schedule_params_and_the_tasks_file_input(walked):
    work, outputs = walked
    meta = json.loads((work / "out" / "anchor_frame.json").read_text())
    assert meta["task"] == "anchor_frame" and meta["inputs"]["frame"] == -1
    image = meta["inputs"]["image"]
    assert image["path"] == "out/unconditional.png" and len(image["sha256"]) == 64
    assert meta["schedule"] == {"name": "middle_first", "spacing": "uniform", "shift": 1.0, "steps_offset": 1,
                                "center": 1.0, "lag": 0.5}
    uncond = json.loads((work / "out" / "unconditional.json").read_text())
    assert uncond["schedule"]["name"] == "middle_first" and uncond["schedule"]["center"] == 0.0
    # provenance: the plugin's task and schedule name their distribution, the built-ins say so
    assert meta["provenance"]["task"] == {"name": "anchor_frame", "origin": "my-fvdm-ext 0.1.0"}
    assert meta["provenance"]["schedule"] == {"name": "middle_first", "origin": "my-fvdm-ext 0.1.0"}
    assert meta["provenance"]["sampler"]["origin"] == "builtin"
    assert meta["provenance"]["training"]["vtv"]["origin"] == "my-fvdm-ext 0.1.0"


def test_jobs_file_takes_the_plugin_schedule_as_a_mapping(walked):
    work, _ = walked
    jobs = work / "out" / "jobs"
    first = json.loads((jobs / "00_unconditional.json").read_text())
    second = json.loads((jobs / "01_anchor_frame.json").read_text())
    assert (first["schedule"]["center"], first["schedule"]["lag"]) == (0.0, 2.0)
    assert second["schedule"]["center"] == 0.3 and second["task_spec"]["multiplier"] == 0.1
    assert second["inputs"]["frame"] == 1 and len(second["inputs"]["image"]["sha256"]) == 64


def test_trained_with_the_plugin_strategy(walked):
    work, _ = walked
    assert (work / "run" / "checkpoints" / "last.pt").is_file()
    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert saved["vtv"]["name"] == "jittered_shared" and saved["vtv"]["spread"] == 0.3


def test_guide_documents_every_task_helper_and_how_to_get_pytest():
    """The helpers were documented only through one example; the last step ran pytest that `.[all]` lacks."""
    text = GUIDE.read_text()
    section = text[text.index("## Reference: the task helpers"):]
    section = section[:section.index("\n## ", 1)]
    for helper in ("self.window(sampling)", "self.require(inputs, *keys)", "self.labels(sampling, inputs, batch)",
                   "self.check_sampling(sampling)", "batch_of(inputs, sampling, *tensors)", "place(frames, positions",
                   "sample_window(task, sampling", "rollout(task, sampling", "expand_batch(", "as_frames(",
                   "reader.video(path, *, min_frames=1, max_frames=None,\nframes=None", "make_context(",
                   "build_context("):
        assert helper in section, helper
    steps = guide_steps(text)
    pytest_at = next(i for i, (kind, what, _) in enumerate(steps) if kind == "command" and what.startswith("pytest"))
    before = text[:text.index("$ " + steps[pytest_at][1])]
    assert '".[all,test]"' in before[before.rindex("## "):]  # said in the step that runs it
