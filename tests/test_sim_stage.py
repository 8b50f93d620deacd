"""The virtual microscope as a whole instrument: XY stage over a sample larger than one
field, objectives with pixel-size calibrations, Channel presets, and z-stacks through the
pupil model's defocus."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator

import numpy as np
import pytest
from pymmcore_plus.experimental.unicore import UniMMCore
from scipy import ndimage

from smartscope.simulators import get_virtual_microscope, virtual_config_path
from smartscope.simulators.microscope import VirtualMicroscope
from smartscope.simulators.optics import OBJECTIVES
from smartscope.simulators.stage import cover, field_seed

N = 64  # sensor edge, px
W_UM = N * 0.1  # field width at the default objective


@pytest.fixture
def core() -> Iterator[UniMMCore]:
    c = UniMMCore()
    c.loadSystemConfiguration(str(virtual_config_path()))
    c.setProperty("Camera", "SensorSize", str(N))
    c.setProperty("Camera", "Pacing", "AsFastAsPossible")
    yield c
    c.unloadAllDevices()
    del c
    gc.collect()


def view(vm: VirtualMicroscope, x_um: float, y_um: float) -> np.ndarray:
    vm.set_stage_xy_um(x_um, y_um)
    return vm.expected_photons()[0]


def test_cover_cuts_a_view_into_exact_pieces() -> None:
    assert [p.field for p in cover(0, 0, 64)] == [(0, 0)] and cover(0, 0, 64)[0].whole
    for ox, oy in ((10, 0), (-5, 70), (63, 63), (-64, 128), (-1000, 333)):
        hits = np.zeros((64, 64), int)
        for p in cover(ox, oy, 64):
            hits[p.fov_rows, p.fov_cols] += 1
            # the piece's field pixels are the view's pixels shifted by the field's origin
            assert p.fov_rows.start - p.dy_px == p.field_rows.start
            assert p.fov_cols.start - p.dx_px == p.field_cols.start
        assert np.all(hits == 1)
    assert field_seed(7, 0, 0) == 7 and field_seed(7, 1, 0) != field_seed(7, 0, 1) != 7


def test_small_moves_shift_the_image_and_cross_field_borders_seamlessly() -> None:
    vm = VirtualMicroscope("cells", seed=2, sensor_px=N)
    home = view(vm, 0.0, 0.0)
    right = view(vm, W_UM, 0.0)  # the next field, exactly
    moved = view(vm, 1.0, 0.0)  # 10 px right: the image content moves 10 px left
    np.testing.assert_array_equal(moved[:, : N - 10], home[:, 10:])
    np.testing.assert_array_equal(moved[:, N - 10 :], right[:, :10])
    down = view(vm, 0.0, 0.5)
    np.testing.assert_array_equal(down[: N - 5], home[5:])
    back = view(vm, 0.0, 0.0)
    np.testing.assert_array_equal(back, home)


def test_every_field_has_its_own_sample_made_from_the_seed() -> None:
    a = VirtualMicroscope("cells", seed=2, sensor_px=N)
    b = VirtualMicroscope("cells", seed=2, sensor_px=N)
    c = VirtualMicroscope("cells", seed=3, sensor_px=N)
    far = (120 * W_UM, -37 * W_UM)
    fa, fb, fc = view(a, *far), view(b, *far), view(c, *far)
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
    home = view(a, 0.0, 0.0)
    assert abs(np.corrcoef(home.ravel(), fa.ravel())[0, 1]) < 0.5
    # a field dropped from the cache is rebuilt identically
    small = VirtualMicroscope("cells", seed=2, sensor_px=N, field_cache_mb=0.0)
    for k in range(6):
        view(small, k * W_UM, 0.0)
    np.testing.assert_array_equal(view(small, *far), fa)


def test_events_and_emitters_carry_their_field_and_view_coordinates() -> None:
    vm = VirtualMicroscope("events", seed=1, sensor_px=128)
    vm.set_stage_xy_um(12.8, 0.0)  # field (1, 0)
    _, truth = vm.render_frame()
    own = vm.events_truth((1, 0))
    assert own and {e["event_id"] for e in truth.events} == {e["event_id"] for e in own}
    assert all(e["field_ix"] == 1 and e["field_iy"] == 0 for e in truth.events)
    assert truth.stage_x_um == 12.8 and truth.stage_y_um == 0.0
    vm.set_stage_xy_um(6.4, 0.0)  # straddles fields 0 and 1: positions in view pixels
    _, truth = vm.render_frame()
    for e in truth.events:
        assert 0 <= e["x_px"] < 128 and 0 <= e["y_px"] < 128
        src = next(r for r in vm.events_truth((e["field_ix"], 0)) if r["event_id"] == e["event_id"])
        assert e["x_px"] == pytest.approx(src["x_px"] + (e["field_ix"] * 128 - 64))

    beads = VirtualMicroscope("beads", seed=1, sensor_px=128)
    _, home = beads.render_frame()
    beads.set_stage_xy_um(3.2, 0.0)  # 32 px: the lattice moves 32 px left, field 1 enters
    _, moved = beads.render_frame()
    assert home.emitters is not None and moved.emitters is not None
    hx, mx = np.sort(home.emitters["x_nm"]), moved.emitters["x_nm"]
    assert np.all((mx >= 0) & (mx < 128 * 100))
    from_home = np.sort(mx[moved.emitters["emitter_id"] < 2**32])
    np.testing.assert_allclose(from_home, hx[hx >= 3200] - 3200)
    assert np.sum(moved.emitters["emitter_id"] >= 2**32) == np.sum(hx < 3200)  # from field (1, 0)


def test_light_bleaches_only_the_fields_it_falls_on() -> None:
    vm = VirtualMicroscope("cells", seed=0, sensor_px=N)
    vm.set_power("561", 100.0)
    vm.set_exposure_ms(500.0)
    vm.set_stage_xy_um(W_UM * 5, 0.0)
    for _ in range(5):
        _, t = vm.render_frame()
    assert t.bleach_remaining["mitochondria"] < 0.95
    vm.set_stage_xy_um(0.0, 0.0)
    _, t = vm.render_frame()
    assert t.bleach_remaining["mitochondria"] == 1.0
    assert vm.dose_total_mj["561"] == pytest.approx(6 * 100.0 * 500.0 * 1e-3)
    with pytest.raises(ValueError, match="stage x_um"):
        vm.set_stage_xy_um(1e6, 0.0)


def test_xy_stage_moves_the_field_of_view_through_the_core(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    assert core.getXYStageDevice() == "XY"
    core.setXYPosition(25.0, -40.0)
    assert core.getXYPosition() == pytest.approx((25.0, -40.0))
    core.snapImage()
    t = vm.truth(vm.frame - 1)
    assert (t.stage_x_um, t.stage_y_um) == (25.0, -40.0)
    core.setOriginXY()  # reported coordinates move, the sample does not
    assert core.getXYPosition() == pytest.approx((0.0, 0.0))
    assert vm.stage_xy_um == (25.0, -40.0)
    with pytest.raises(ValueError, match="stage x_um"):
        core.setXYPosition(1e6, 0.0)


def _nucleus_area_um2(vm: VirtualMicroscope) -> float:
    """Median area of the nuclei that do not touch the field's edge."""
    assert vm.cells is not None
    lab, n = ndimage.label(vm.cells.geom.nucleus_mask)
    edge = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])))
    sizes = np.bincount(lab.ravel())
    inside = [sizes[i] for i in range(1, n + 1) if i not in edge]
    assert len(inside) >= 3
    return float(np.median(inside)) * vm.pixel_size_um**2


def test_objectives_set_the_pixel_size_the_sample_is_imaged_at(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    core.setProperty("Camera", "SensorSize", "256")
    labels = core.getStateLabels("Objective")
    for obj in OBJECTIVES:
        assert obj.label in labels
        core.setProperty("Objective", "Label", obj.label)
        assert core.getPixelSizeUm() == pytest.approx(obj.pixel_size_um)
        core.snapImage()
        t = vm.truth(vm.frame - 1)
        assert t.objective == obj.label and t.pixel_size_um == pytest.approx(obj.pixel_size_um)
        assert vm.cells is not None and vm.cells.optics["nuclei"].na == obj.na
        assert vm.cells.geom.pixel_size_um == obj.pixel_size_um
    # the same kind of cells, three times larger in pixels at 60x than at 20x
    core.setProperty("Objective", "Label", "20x/0.75 Air")
    core.snapImage()
    a20 = _nucleus_area_um2(vm)
    core.setState("Objective", 1)
    core.snapImage()
    a60 = _nucleus_area_um2(vm)
    assert a60 == pytest.approx(a20, rel=0.35)
    assert core.getPixelSizeUm() == pytest.approx(0.1) and vm.pixel_size_um == pytest.approx(0.1)


def test_channel_presets_light_one_source(core: UniMMCore) -> None:
    vm = get_virtual_microscope(core)
    assert core.getChannelGroup() == "Channel"
    want = {"405": ("405", 2.0), "488": ("488", 10.0), "561": ("561", 10.0), "640": ("640", 10.0)}
    want["BF"] = ("lamp", 1.0)
    assert set(core.getAvailableConfigs("Channel")) == set(want)
    for preset, (source, mw) in want.items():
        core.setConfig("Channel", preset)
        assert core.getCurrentConfig("Channel") == preset
        core.snapImage()
        t = vm.truth(vm.frame - 1)
        assert {k: v for k, v in t.power_mean_mw.items() if v} == {source: mw}
    # the transmitted lamp images the same cells label-free
    core.setConfig("Channel", "BF")
    core.snapImage()
    bf = vm.truth(vm.frame - 1).clean
    assert bf is not None and float(bf.std()) > 0.01 * float(bf.mean()) > 0


def _axial_fwhm_um(core: UniMMCore, zs: np.ndarray) -> tuple[float, float]:
    vm = get_virtual_microscope(core)
    peaks = []
    for z in zs:
        core.setPosition(float(z))
        core.snapImage()
        clean = vm.truth(vm.frame - 1).clean
        assert clean is not None
        peaks.append(float(clean.max()))
    p = np.array(peaks) / max(peaks)
    above = np.flatnonzero(p >= 0.5)
    lo, hi = above[0], above[-1]
    # half-maximum crossings by linear interpolation on each flank
    z_lo = np.interp(0.5, [p[lo - 1], p[lo]], [zs[lo - 1], zs[lo]])
    z_hi = np.interp(0.5, [p[hi + 1], p[hi]], [zs[hi + 1], zs[hi]])
    return float(z_hi - z_lo), float(zs[int(np.argmax(p))])


def test_z_stack_through_beads_follows_the_pupil_defocus(core: UniMMCore) -> None:
    core.setProperty("Camera", "Scenario", "beads")
    for obj in (OBJECTIVES[1], OBJECTIVES[0]):  # 60x/1.40 oil, 20x/0.75 air
        core.setProperty("Objective", "Label", obj.label)
        # widefield axial FWHM of a point source, 0.88 λ / (n − √(n² − NA²)), λ = 670 nm
        n, na = obj.n_immersion, obj.na
        expected = 0.88 * 0.670 / (n - math.sqrt(n * n - na * na))
        zs = np.round(np.linspace(-1.2, 1.2, 25) * expected, 4)
        fwhm, z_best = _axial_fwhm_um(core, zs)
        assert z_best == 0.0
        assert fwhm == pytest.approx(expected, rel=0.2), obj.label
