"""dask.distributed batch segmentation: exactly the single-process result, resumable."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from napari_unet.core.errors import InputError
from napari_unet.core.events import Progress, ScaleChosen
from napari_unet.core.largeimage import BlockStore, open_image, segment_blocks_iter
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model
from napari_unet.core.segment import SegmentOptions, segment

pytest.importorskip("distributed")

from napari_unet.core.distributed import (
    ImageSource,
    local_client,
    segment_distributed_iter,
)

TINY = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch")
TILE = 124


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, seed=1, name="tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    noise = np.random.default_rng(0).normal(size=(600, 700))
    return ndimage.gaussian_filter(noise, 6).astype(np.float32)


@pytest.fixture(scope="module")
def options(model, image) -> SegmentOptions:
    probabilities = segment(model, image, tile_size=TILE, output="probabilities")
    return SegmentOptions(tile_size=TILE, threshold=float(np.median(probabilities[1])), min_size=3)


@pytest.fixture(scope="module")
def client():
    # Thread workers keep the test fast; the CLI test runs worker processes.
    with local_client(2, processes=False) as client:
        yield client


def _drain(generator):
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as finished:
            return finished.value, events


def test_two_workers_give_exactly_the_single_process_labels(
    tmp_path, model, image, options, client
):
    expected = segment(model, image, options=options)
    assert expected.max() > 50
    result, events = _drain(
        segment_distributed_iter(
            model, image, tmp_path / "d.zarr", client=client, options=options, block_size=256
        )
    )
    np.testing.assert_array_equal(result[:], expected)
    blocks = [e for e in events if isinstance(e, Progress) and e.message == "blocks"]
    assert [e.done for e in blocks] == list(range(1, 10)) and blocks[-1].total == 9
    block_rows = {record["rows"][0] for record in BlockStore(tmp_path / "d.zarr").done().values()}
    assert block_rows == {0, 228, 456}


def test_workers_open_a_path_themselves(tmp_path, model, image, options, client):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=image.shape, dtype="f4", chunks=(256, 256))[
        :
    ] = image
    mask_options = SegmentOptions(tile_size=TILE, threshold=options.threshold, output="mask")
    result, _ = _drain(
        segment_distributed_iter(
            model,
            tmp_path / "in.zarr",
            tmp_path / "m.zarr",
            client=client,
            options=mask_options,
            block_size=256,
        )
    )
    np.testing.assert_array_equal(result[:], segment(model, image, options=mask_options))
    source = ImageSource(tmp_path / "in.zarr")
    assert source.array is None and source.path.endswith("in.zarr")


def test_a_distributed_run_resumes_a_local_one(tmp_path, model, image, options, client):
    path = tmp_path / "r.zarr"
    local = segment_blocks_iter(model, image, path, options=options, block_size=256)
    for event in local:
        if isinstance(event, Progress) and event.done == 4:
            break
    local.close()
    assert len(BlockStore(path).done()) == 4
    _, events = _drain(
        segment_distributed_iter(
            model, image, path, client=client, options=options, block_size=256, resume=True
        )
    )
    blocks = [e.done for e in events if isinstance(e, Progress) and e.message == "blocks"]
    assert blocks == [5, 6, 7, 8, 9]  # the 4 finished blocks were not recomputed
    np.testing.assert_array_equal(open_image(path)[:], segment(model, image, options=options))


def test_closing_the_run_cancels_the_queued_blocks(tmp_path, model, image, options, client):
    path = tmp_path / "c.zarr"
    run = segment_distributed_iter(
        model, image, path, client=client, options=options, block_size=128
    )
    first = next(run)
    assert first.message == "blocks"
    run.close()
    client.run(lambda: None)  # let the cancellation reach the workers
    done = len(BlockStore(path).done())
    assert 1 <= done < first.total
    assert BlockStore(path).run_record()["complete"] is False


def test_an_unreachable_scheduler_is_an_actionable_error():
    from napari_unet.core.distributed import connect
    from napari_unet.core.errors import InputError

    with pytest.raises(
        InputError, match=r"cannot connect to a dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        connect("tcp://127.0.0.1:9", timeout="1s")


def test_missing_distributed_says_how_to_install(monkeypatch):
    import sys

    from napari_unet.core.distributed import local_client

    monkeypatch.setitem(sys.modules, "distributed", None)  # import now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'napari-unet\[large\]'"):
        with local_client(2):
            pass


@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_workers_read_the_image_at_the_model_scale(tmp_path, model, image, options, client, output):
    scaled = replace(model, object_diameter=10.0)
    at_scale = replace(options, diameter=7.0, output=output)  # x1.43
    expected = segment(scaled, image, options=at_scale)
    zarr.create_array(str(tmp_path / "in.zarr"), shape=image.shape, dtype="f4", chunks=(256, 256))[
        :
    ] = image
    result, events = _drain(
        segment_distributed_iter(
            scaled, tmp_path / "in.zarr", tmp_path / "d.zarr", client=client, options=at_scale,
            block_size=256,
        )
    )  # fmt: skip
    assert isinstance(events[0], ScaleChosen) and events[0].choice.factor == 10 / 7
    np.testing.assert_array_equal(result[:], expected)
    assert BlockStore(tmp_path / "d.zarr").run_record()["scale"]["factor"] == [10 / 7] * 2


def _same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize(
    ("post", "exact"),
    [
        ({"fill_boundaries": True, "min_size": 20}, True),
        ({"split_touching": True, "fill_boundaries": True, "min_size": 20}, False),
        ({"merge_boundaries": 0.3, "min_size": 5}, False),
    ],
    ids=["fill-min-size", "split-fill-min-size", "grow-and-merge"],
)
@pytest.mark.slow  # ~10 s each: in memory, on two workers and in one process
def test_workers_give_the_whole_plane_labels_of_a_single_process(
    tmp_path, model, image, options, client, post, exact
):
    """The workers store each block's mask (and foreground), then label the planes (a
    task per plane) as a single-process run does: the same labels. Against in memory: exact for
    fill and min size; split and grow-and-merge on an untrained network's nearly flat
    output meet ties the watershed breaks by position (adapted Rand error ~1e-4)."""
    options = replace(options, **post)
    if "merge_boundaries" in post:  # seeds: the upper tenth of the untrained output
        probabilities = segment(model, image, tile_size=TILE, output="probabilities")
        options = replace(options, threshold=float(np.quantile(probabilities[1], 0.9)))
    expected = segment(model, image, options=options)
    assert expected.max() > 100
    result, events = _drain(
        segment_distributed_iter(
            model, image, tmp_path / "w.zarr", client=client, options=options, block_size=256
        )
    )
    local = segment_blocks_iter(model, image, tmp_path / "l.zarr", options=options, block_size=256)
    np.testing.assert_array_equal(result[:], _drain(local)[0][:])
    if exact:
        assert _same_up_to_renumbering(result[:], expected)
    else:
        assert adapted_rand_error(expected, result[:])[0] <= 0.005
    labelled = [e for e in events if isinstance(e, Progress) and "on the workers" in e.message]
    assert [(e.done, e.total) for e in labelled] == [(0, 1), (1, 1)]  # reported when sent, done


def test_workers_label_each_plane_of_a_stack_in_a_task_of_its_own(
    tmp_path, model, image, options, client
):
    """A stack's planes are labelled on the workers, one task each (not in this
    process): the labels equal a single-process block-wise run's, plane by plane."""
    from distributed import get_task_stream

    stack = np.stack([image[:300, :350], image[300:, 350:]])
    options = replace(options, fill_boundaries=True, min_size=20)
    with get_task_stream(client) as tasks:
        result, events = _drain(
            segment_distributed_iter(
                model, stack, tmp_path / "s.zarr", client=client, options=options, block_size=128
            )
        )
    local = segment_blocks_iter(model, stack, tmp_path / "l.zarr", options=options, block_size=128)
    np.testing.assert_array_equal(result[:], _drain(local)[0][:])
    assert all(result[plane].max() > 5 for plane in range(2))
    label_tasks = {
        str(task["key"]) for task in tasks.data if "napari-unet-labels" in str(task["key"])
    }
    assert {key.split("-")[3] for key in label_tasks} == {"0", "1"}
    labelled = [e.done for e in events if isinstance(e, Progress) and "on the workers" in e.message]
    assert labelled == [0, 1, 2]


def test_a_cluster_without_workers_is_an_actionable_error():
    import distributed

    from napari_unet.core.distributed import wait_for_workers

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as no_workers:
            with pytest.raises(InputError, match=r"1 dask worker\(s\) did not start within 1 s"):
                wait_for_workers(no_workers, timeout=1)


def test_local_workers_share_the_cores_without_dask_malloc_setting():
    from napari_unet.core.distributed import usable_cores, worker_environment

    environment = worker_environment(3)
    assert {environment[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} == {"3"}
    # dask's default sets it, which makes every feature map a fresh mmap (see the docstring)
    assert "MALLOC_TRIM_THRESHOLD_" not in environment
    assert usable_cores() >= 1


_PAGE_FAULTS = """
import resource, sys, threading
import numpy as np
from napari_unet.core.distributed import set_up_worker

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):  # a feature map's life: allocated, written, freed
        # Just under 4 MiB: numpy asks the kernel for huge pages from 4 MiB on, and then
        # an array faults in 2 MiB at a time or 4 kiB at a time, as the kernel can.
        np.ones(2**20 - 1024, np.float32).sum()
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

counts = []
for setup in (False, True):
    if setup:
        set_up_worker()
    worker = threading.Thread(target=faults)  # dask workers compute in threads
    worker.start()
    worker.join()
print(*counts)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc thresholds")
def test_set_up_worker_stops_dask_malloc_setting_faulting_every_array(tmp_path):
    script = tmp_path / "faults.py"
    script.write_text(_PAGE_FAULTS)
    environment = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}  # as dask's nanny sets
    output = subprocess.run(
        [sys.executable, str(script)], env=environment, capture_output=True, text=True, check=True
    ).stdout
    before, after = (int(count) for count in output.split())
    assert before > 200 * 256  # each 4 MiB array faulted in afresh (1023 pages, in runs)
    assert after < before / 20


@pytest.mark.slow  # starts two worker processes that import torch (~5-10 s)
def test_local_worker_processes_run_one_torch_thread_per_share_of_the_cores():
    from napari_unet.core.distributed import usable_cores, wait_for_workers

    with local_client(2) as processes:
        wait_for_workers(processes)
        threads = processes.run(lambda: __import__("torch").get_num_threads())
        malloc = processes.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(threads.values()) == [max(1, usable_cores() // 2)] * 2
    assert list(malloc.values()) == [None, None]
