"""Ctrl-C on the command line, as a user presses it: a real SIGINT to a running process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core import modelfile
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.safety import TEMP_PREFIX
from napari_unet.core.train import Trainer

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX"),
    # each test starts a napari-unet process that imports torch (~5-30 s)
    pytest.mark.slow,
]


def _as_from_a_shell() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class _Running:
    """A CLI process whose stderr is collected as it arrives."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "napari_unet.cli", *argv],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            # As from a shell: Ctrl-C delivered, whatever this test process inherited
            # (a child keeps an ignored or blocked SIGINT of its parent).
            preexec_fn=_as_from_a_shell,
        )
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for chunk in iter(lambda: self.process.stderr.read1(4096), b""):
            self.chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Block until ``text`` appears on stderr (the run is under way)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.process.poll() is not None:
                pytest.fail(f"the process ended before {text!r}: {self.stderr}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"no {text!r} within {timeout} s: {self.stderr}")
            time.sleep(0.05)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=120)
        self.reader.join(timeout=10)
        return status


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, modelfile.MODELS_DIR_ENV: str(tmp_path / "user")}


def test_ctrl_c_during_segmentation_is_one_line_and_writes_nothing(tmp_path, env):
    model = save_model(random_model(TINY, seed=2), tmp_path / "tiny.safetensors")
    image = np.random.default_rng(0).integers(0, 255, (6, 1500, 1500)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", image)
    output = tmp_path / "big_labels.tif"
    run = _Running(["segment", str(tmp_path / "big.tif"), "-o", str(output), "-m", str(model)], env)
    run.wait_for("tile")  # the progress bar: tiles are being computed
    assert run.interrupt() == 130
    assert "Traceback" not in run.stderr
    assert "napari-unet: interrupted" in run.stderr
    assert not output.exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(TEMP_PREFIX)]


def test_ctrl_c_during_training_saves_the_best_weights_so_far(tmp_path, env):
    output = tmp_path / "mine.safetensors"
    run = _Running(_train_argv(tmp_path, output, "--steps", "100000"), env)
    run.wait_for("step/s")  # steps have completed
    assert run.interrupt() == 130
    assert "Traceback" not in run.stderr
    assert "training interrupted at step" in run.stderr
    assert f"saved {output}" in run.stderr
    saved = load_model(output)
    assert saved.provenance["steps"] >= 1
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(TEMP_PREFIX)]


def _interrupting_run(steps_before: int):
    """A ``Trainer.run`` that completes ``steps_before`` real steps, then gets Ctrl-C."""
    real_run = Trainer.run

    def run(self, steps=None):
        events = real_run(self, steps)
        if steps_before == 0:
            events.close()
            raise KeyboardInterrupt
        for event in events:
            if self.step >= steps_before:
                events.close()
                raise KeyboardInterrupt
            yield event
        raise AssertionError("the run ended before the interruption")

    return run


def _train_argv(tmp_path: Path, output: Path, *extra: str) -> list[str]:
    rows, cols = np.indices((80, 90))
    labels = ((rows - 40) ** 2 + (cols - 45) ** 2 < 200).astype(np.uint16)
    tifffile.imwrite(tmp_path / "image.tif", (40 + 150 * labels).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return ["train", "--images", str(tmp_path / "image.tif"), "--labels",
            str(tmp_path / "labels.tif"), "--annotation", "dense", "--base", "scratch",
            "--steps", "50", "--device", "cpu", "-o", str(output), *extra]  # fmt: skip


def test_ctrl_c_before_the_first_step_never_replaces_a_model(tmp_path, monkeypatch, capsys):
    old = save_model(random_model(TINY, seed=5), tmp_path / "mine.safetensors")
    before = old.read_bytes()
    monkeypatch.setattr(Trainer, "run", _interrupting_run(0))
    assert main(_train_argv(tmp_path, old, "--overwrite")) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "saved" not in err and "Traceback" not in err
    assert old.read_bytes() == before


def test_a_failing_save_after_ctrl_c_is_reported_without_hiding_the_interruption(
    tmp_path, monkeypatch, capsys
):
    output = tmp_path / "mine.safetensors"
    monkeypatch.setattr(Trainer, "run", _interrupting_run(2))

    def failing_save(*args, **kwargs):
        raise OSError(28, "No space left on device", str(output))

    monkeypatch.setattr(modelfile, "save_model", failing_save)
    assert main(_train_argv(tmp_path, output)) == 130
    err = capsys.readouterr().err
    assert "could not save the weights learnt so far: No space left on device" in err
    assert "napari-unet: interrupted" in err and "Traceback" not in err
    assert not output.exists()
