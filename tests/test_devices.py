"""Device detection on recorded files from other machines, and profile choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemed import load
from edgemed.devices.detect import (
    Machine,
    detect,
    match_profile,
    parse_cpuinfo,
    parse_tegra_release,
    resolve_device,
)
from edgemed.devices.profiles import load_profiles
from edgemed.errors import BackendUnavailable

FIX = Path(__file__).parent / "fixtures" / "devices"
PROFILES = load_profiles()


def test_x86_avx512_vnni_machine():
    m = detect(FIX / "x86_avx512", arch="x86_64", probe_openvino=False)
    assert m.cpu_model == "AMD EPYC" and "avx2" in m.isa and "avx512_vnni" in m.isa and m.int8_dot_product
    assert m.jetson_model is None and match_profile(m, PROFILES) == "x86-cpu"


def test_raspberry_pi_5():
    m = detect(FIX / "pi5", arch="aarch64", probe_openvino=False)
    assert m.cpu_model == "Raspberry Pi 5 Model B Rev 1.0" and m.cores == 2
    assert "neon" in m.isa and "neon-dotprod" in m.isa and m.int8_dot_product
    assert match_profile(m, PROFILES) == "arm64-cpu"


@pytest.mark.parametrize("folder,profile,l4t", [("agx_orin", "jetson-agx-orin", "R36.3.0"),
                                                ("xavier_nx", "jetson-xavier-nx", "R35.4.1")])
def test_jetsons(folder, profile, l4t):
    m = detect(FIX / folder, arch="aarch64", probe_openvino=False)
    assert m.l4t_release == l4t and "Jetson" in m.jetson_model
    assert match_profile(m, PROFILES) == profile
    assert resolve_device("jetson", m, PROFILES).name == profile
    assert resolve_device("cuda", m, PROFILES).name == profile


def test_x86_without_vnni_has_no_int8_units():
    text = "processor : 0\nmodel name : Intel(R) Core(TM) i7-6700\nflags : sse4_2 avx avx2 fma\n"
    model, isa, cores = parse_cpuinfo(text)
    assert model.startswith("Intel") and isa == ["sse4_2", "avx", "avx2", "fma"] and cores == 1
    assert not Machine("x86_64", model, isa).int8_dot_product


def test_tegra_release_parse_rejects_garbage():
    assert parse_tegra_release("hello") is None


def test_asking_for_a_device_this_machine_is_not():
    m = detect(FIX / "x86_avx512", arch="x86_64", probe_openvino=False)
    with pytest.raises(BackendUnavailable, match="no Jetson was detected: this machine is AMD EPYC"):
        resolve_device("jetson", m, PROFILES)
    with pytest.raises(BackendUnavailable, match="OpenVINO sees no NPU"):
        resolve_device("npu", m, PROFILES)
    assert resolve_device("cpu", m, PROFILES).name == "x86-cpu"


def test_auto_measures_and_caches_the_choice(cnn_bundle_all, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEMED_CACHE", str(tmp_path / "cache"))
    with load(cnn_bundle_all, device="auto") as pipe:
        first = pipe.describe()
    assert first["reason"].startswith("auto: measured p50") and "openvino/" in first["reason"]
    with load(cnn_bundle_all, device="auto") as pipe:
        again = pipe.describe()
    assert again["artifact"] == first["artifact"] and "cached measurement" in again["reason"]
    # the fastest passed artifact on this machine, measured side by side
    timings = {part.split(" ")[0]: float(part.split(" ")[1]) for part in
               first["reason"].split("measured p50 ")[1].split(", ")}
    chosen = pipe.artifact.key
    assert timings[chosen] == min(timings.values())


def test_tegrastats_power_lines_from_orin_and_xavier():
    from edgemed.benchmarks.energy import parse_tegrastats_power_mw

    orin = ("11-25-2026 10:01:02 RAM 3110/62841MB (lfb 15x4MB) CPU [2%@729,1%@729] EMC_FREQ 0% GR3D_FREQ 0% "
            "cpu@47.5C soc2@44.8C VDD_GPU_SOC 1596mW/1596mW VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 2923mW/2923mW "
            "VDD_IN 4884mW/4884mW")
    xavier = ("RAM 2286/7771MB (lfb 947x4MB) SWAP 0/3885MB CPU [3%@1190,2%@1190] GR3D_FREQ 0%@114 "
              "VDD_IN 3982/3982 VDD_CPU_GPU_CV 476/476 VDD_SOC 1190/1190")
    assert parse_tegrastats_power_mw(orin) == 4884.0
    assert parse_tegrastats_power_mw(xavier) == 3982.0
    assert parse_tegrastats_power_mw("RAM 100/200MB CPU [1%@100]") is None


def test_rapl_counters_read_from_a_sysfs_tree(tmp_path):
    from edgemed.benchmarks.energy import rapl_counters

    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("123456789\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone (core): not summed twice
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    assert rapl_counters(tmp_path) == [zone / "energy_uj"]
    assert rapl_counters(tmp_path / "missing") == []
