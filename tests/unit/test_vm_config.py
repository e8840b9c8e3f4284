"""vm_config: an allowlist of PVE VM options, each value checked against PVE 9's schema.

Every refusal names the key and says why; the attacks seen against the demo are refused.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from coordinator.jobs.template_import import VM_DEFAULTS, vm_name
from shared import vm_config_facts
from shared.text_fields import VmName
from shared.validation import Input, InvalidInput, parse
from shared.vm_config import VmConfig, _formats_not_modelled, check_option, check_options, check_volumes
from shared.vm_config_policy import ALLOWED
from tests.support import apidata as ground_truth
from tests.support.apidata import REPO

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3HdiyHmW3EgJRtDwP4uU3ZpeAyFYGqL8t0zQgT7ls me@host"
RSA_LINE_BROKEN = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== broken"


def urlencoded(text: str) -> str:
    return quote(text, safe="")


def refused(options: dict[str, Any], storage: str = "local") -> str:
    with pytest.raises(ValueError) as caught:
        check_volumes(check_options(options), storage)
    return str(caught.value)


# ------------------------------------------------------------------ the attacks


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"sata1": "local:0,import-from=/path/to/agent.token,format=raw"},
            "vm_config sata1: 'import-from' is not allowed",
        ),
        ({"virtio1": "/tmp/x"}, "vm_config key 'virtio1' is not allowed"),
        ({"args": "-chardev file,id=x,path=/etc/shadow"}, "vm_config key 'args' is not allowed"),
        ({"hookscript": "local:snippets/hook.pl"}, "vm_config key 'hookscript' is not allowed"),
        (
            {"ciuser": "root\x00x"},
            "vm_config ciuser must not contain control characters (U+0000 at position 4)",
        ),
        ({"searchdomain": "a\nb"}, "vm_config searchdomain must not contain control characters (U+000A"),
        ({"ide2": "/etc/passwd,media=cdrom"}, "vm_config ide2: a drive other than the imported disk"),
        ({"efidisk0": "local:0,import-from=/etc/shadow"}, "vm_config efidisk0: 'import-from' is not allowed"),
        ({"tpmstate0": "local:vm-100-disk-0"}, "vm_config tpmstate0: TPM state is a new volume"),
        ({"serial0": "/dev/ttyS0"}, "vm_config serial0: '/dev/ttyS0' is not allowed: only 'socket'"),
        ({"rng0": "source=/dev/hwrng"}, "vm_config rng0: source='/dev/hwrng' is not allowed"),
    ],
)
def test_attacks_are_refused_and_named(options: dict[str, Any], message: str) -> None:
    assert refused(options).startswith(message)


@pytest.mark.parametrize(
    "key",
    [
        "args",
        "hookscript",
        "hostpci0",
        "usb0",
        "parallel0",
        "virtiofs0",
        "vmstatestorage",
        "cicustom",
        "ivshmem",
        "amd-sev",
        "intel-tdx",
        "affinity",
        "arch",
        "protection",
        "lock",
        "pool",
        "storage",
        "import-working-storage",
        "archive",
        "start",
        "unused0",
        "virtio0",
        "watchdog",
        "smbios1",
        "no-such-option",
    ],
)
def test_options_outside_the_allowlist_are_refused(key: str) -> None:
    assert refused({key: "1"}) == f"vm_config key {key!r} is not allowed"


@pytest.mark.parametrize("key", ["vmid", "scsi0", "description", "template"])
def test_options_pvesphere_sets_are_refused(key: str) -> None:
    assert refused({key: "1"}) == f"vm_config key {key!r} is set by pvesphere and cannot be overridden"


def test_every_other_pve_option_is_refused() -> None:
    subset = json.loads((REPO / "pvesim" / "schema_subset.json").read_text())
    pve_options = subset["endpoints"]["POST /nodes/{node}/qemu"]["properties"]
    for name in pve_options:
        if name in ALLOWED:
            continue
        key = name.replace("[n]", "1") if name.endswith("[n]") else name
        with pytest.raises(ValueError, match=re.escape(f"vm_config key {key!r} is ")):
            check_option(key, "1")


# ------------------------------------------------------------------ every allowed option

# key: (a good value, a bad value, what the refusal says)
CASES: dict[str, tuple[Any, Any, str]] = {
    "cores": (4, 0, "value must have a minimum value of 1"),
    "sockets": (2, "two", "type check ('integer') failed - got 'two'"),
    "vcpus": (2, 0, "value must have a minimum value of 1"),
    "cpulimit": (1.5, 129, "value must have a maximum value of 128"),
    "cpuunits": (1024, 262145, "value must have a maximum value of 262144"),
    "numa": (True, "maybe", "type check ('boolean') failed - got 'maybe'"),
    "memory": (4096, 8, "memory.current: value must have a minimum value of 16"),
    "balloon": (1024, -1, "value must have a minimum value of 0"),
    "shares": (500, 50001, "value must have a maximum value of 50000"),
    "cpu": ("x86-64-v2-AES,flags=+aes;-pcid", "host,flags=+avx", "VM-specific CPU flags must be a subset of"),
    "machine": ("q35,viommu=intel", "q35,viommu=amd", "machine.viommu: value 'amd' does not have a value"),
    "bios": ("ovmf", "uefi", "value 'uefi' does not have a value in the enumeration 'seabios, ovmf'"),
    "scsihw": ("virtio-scsi-single", "nvme", "value 'nvme' does not have a value in the enumeration"),
    "net0": ("virtio,bridge=vmbr0,tag=42,firewall=1", "virtio,bridge=vmbr0,tag=4095", "net0.tag: value must"),
    "vga": ("serial0", "type=vga9000", "vga.type: value 'vga9000' does not have a value"),
    "serial0": ("socket", "/dev/ttyUSB0", "is not allowed: only 'socket'"),
    "rng0": (
        "source=/dev/urandom,max_bytes=1024",
        "/dev/urandom,max_bytes=0",
        "max_bytes='0' is not allowed",
    ),
    "tablet": (False, 2, "type check ('boolean') failed - got '2'"),
    "keyboard": ("de-ch", "klingon", "value 'klingon' does not have a value in the enumeration"),
    "agent": ("enabled=1,fstrim_cloned_disks=1", "enabled=1,type=usb", "agent.type: value 'usb' does not"),
    "efidisk0": (
        "local:1,efitype=4m,pre-enrolled-keys=1",
        "local:1,efitype=8m",
        "efidisk0.efitype: value '8m'",
    ),
    "tpmstate0": ("local:1,version=v2.0", "local:1,version=v3", "tpmstate0.version: value 'v3'"),
    "name": ("ubuntu-22.04", "ubuntu 22.04", "value does not look like a valid DNS name"),
    "ostype": ("l26", "linux", "value 'linux' does not have a value in the enumeration"),
    "boot": ("order=scsi0;ide2;net0", "order=efidisk0", "invalid boot device 'efidisk0'"),
    "kvm": (True, "sure", "type check ('boolean') failed - got 'sure'"),
    "acpi": (1, 3, "type check ('boolean') failed - got '3'"),
    "localtime": (0, "no way", "type check ('boolean') failed - got 'no way'"),
    "onboot": (True, "often", "type check ('boolean') failed - got 'often'"),
    "startup": ("order=2,up=30", "first", "unable to parse startup options"),
    "reboot": (0, "later", "type check ('boolean') failed - got 'later'"),
    "freeze": (1, "cold", "type check ('boolean') failed - got 'cold'"),
    "tags": ("linux;cloud", "bad/tag", "invalid characters in tag"),
    "ciuser": ("ubuntu", "ubu\x1bntu", "must not contain control characters (U+001B"),
    "cipassword": ("s3cret!", "pass\x7fword", "must not contain control characters (U+007F"),
    "citype": ("nocloud", "cloudbase", "value 'cloudbase' does not have a value in the enumeration"),
    "ciupgrade": (False, "perhaps", "type check ('boolean') failed - got 'perhaps'"),
    "sshkeys": (urlencoded(ED25519), ED25519, "invalid urlencoded string"),
    "ipconfig0": (
        "ip=10.0.0.5/24,gw=10.0.0.1",
        "ip=10.0.0.5/24,gw=10.0.0.256",
        "ipconfig0.gw: invalid format",
    ),
    "nameserver": (
        "1.1.1.1 2606:4700:4700::1111",
        "1.1.1.1 -bad-",
        "value does not look like a valid address",
    ),
    "searchdomain": ("example.com", "example\x85com", "must not contain control characters (U+0085"),
    "ide2": ("local:cloudinit", "local:cloudinit,media=disk", "media='disk' is not allowed"),
    "sata0": (
        "local:cloudinit,media=cdrom",
        "local:iso/seed.iso,media=cdrom",
        "can only be a cloud-init drive",
    ),
    "scsi1": ("local:cloudinit", "local:4", "can only be a cloud-init drive"),
}


def test_the_cases_cover_every_allowed_option() -> None:
    covered = {re.sub(r"\d+$", "[n]", key) if key not in ALLOWED else key for key in CASES}
    assert covered == set(ALLOWED)


@pytest.mark.parametrize("key", sorted(CASES))
def test_an_allowed_option_takes_a_good_value(key: str) -> None:
    good, _bad, _why = CASES[key]
    checked = check_options({key: good})
    check_volumes(checked, "local")
    expected = ("1" if good else "0") if isinstance(good, bool) else str(good)
    assert checked == {key: expected}


@pytest.mark.parametrize("key", sorted(CASES))
def test_an_allowed_option_refuses_a_bad_value_naming_it(key: str) -> None:
    _good, bad, why = CASES[key]
    message = refused({key: bad})
    assert message.startswith(f"vm_config {key}"), message
    assert why in message, message


# ------------------------------------------------------------------ property-string sub-keys


@pytest.mark.parametrize(
    ("key", "value", "subkey"),
    [
        ("efidisk0", "local:1,efitype=4m,format=qcow2", "format"),
        ("efidisk0", "local:1,size=4M", "size"),
        ("tpmstate0", "local:1,import-from=local:100/vm-100-disk-1.raw", "import-from"),
        ("ide2", "local:cloudinit,cache=unsafe", "cache"),
        ("scsi1", "local:cloudinit,serial=x", "serial"),
        ("cpu", "x86-64-v2-AES,reported-model=qemu64", None),
    ],
)
def test_sub_keys_outside_the_allowlist_are_refused(key: str, value: str, subkey: str | None) -> None:
    message = refused({key: value})
    if subkey is None:  # PVE's own schema refuses it in a VM's config
        assert message.startswith(f"vm_config {key}: invalid format - Property 'reported-model' not allowed")
    else:
        assert message == f"vm_config {key}: {subkey!r} is not allowed"


def test_a_nic_model_alias_sets_model_and_mac() -> None:
    assert check_options({"net1": "e1000=BC:24:11:2A:00:01,bridge=vmbr1,link_down=1"})


def test_volume_alias_is_checked_like_file() -> None:
    assert "must be allocated on the template's storage" in refused({"efidisk0": "volume=/dev/sda"})


# ------------------------------------------------------------------ new volumes on the template's storage


@pytest.mark.parametrize(
    ("key", "value"),
    [("efidisk0", "other:1,efitype=4m"), ("tpmstate0", "other:1,version=v2.0"), ("ide2", "other:cloudinit")],
)
def test_new_volumes_must_be_on_the_templates_storage(key: str, value: str) -> None:
    assert refused({key: value}, storage="ceph-storage") == (
        f"vm_config {key}: must be allocated on the template's storage 'ceph-storage', not 'other'"
    )
    check_volumes(check_options({key: value.replace("other", "ceph-storage")}), "ceph-storage")


@pytest.mark.parametrize(
    "value",
    ["/var/lib/pvesphere/agent.token", "local:100/vm-100-disk-0.raw", "local:iso/x.iso", "cdrom", "none"],
)
def test_efi_vars_cannot_be_an_existing_volume_or_a_path(value: str) -> None:
    message = refused({"efidisk0": value})
    assert message.startswith(
        "vm_config efidisk0: EFI vars are a new volume: must be allocated on the template's"
    )
    assert repr(value) in message


def test_one_cloud_init_drive_at_most() -> None:
    assert refused({"ide2": "local:cloudinit", "sata0": "local:cloudinit"}) == (
        "vm_config may have one cloud-init drive, not 2 (ide2, sata0)"
    )


# ------------------------------------------------------------------ values


def test_ssh_keys_are_checked_line_by_line() -> None:
    keys = urlencoded(f"{ED25519}\n\n{ED25519}\n")
    assert check_options({"sshkeys": keys}) == {"sshkeys": keys}
    message = refused({"sshkeys": urlencoded(f"{ED25519}\n{RSA_LINE_BROKEN}")})
    assert message == "vm_config sshkeys: line 2 is not an SSH public key (one key per line, OpenSSH format)"


def test_a_key_made_by_ssh_keygen_passes(tmp_path: Path) -> None:
    key = tmp_path / "id"
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key)], check=True)
    except FileNotFoundError:
        pytest.skip("ssh-keygen is not installed")
    public = key.with_suffix(".pub").read_text()
    assert check_options({"sshkeys": urlencoded(public)})


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, float("nan")])
def test_values_are_strings_numbers_or_booleans(value: Any) -> None:
    assert refused({"cores": value}) == "vm_config cores must be a string, number or boolean"


def test_defaults_pass_the_allowlist() -> None:
    checked = check_options(VM_DEFAULTS)
    check_volumes(checked, "local")
    assert set(checked) == set(VM_DEFAULTS)


@pytest.mark.parametrize(
    ("template_name", "expected"),
    [
        ("Ubuntu 22.04 LTS", "Ubuntu-22.04-LTS"),
        ("web..server", "web.server"),
        ("db.-primary-", "db.primary"),
        ("...", "template-7"),
        ("日本語", "template-7"),
        ("a" * 62 + "-.b", "a" * 62),
    ],
)
def test_vm_names_made_from_template_names_are_dns_names(template_name: str, expected: str) -> None:
    assert vm_name(template_name, 7) == expected
    assert VmName.check(expected) == expected


class Form(Input):
    vm_config: VmConfig = VmConfig()


def test_the_type_takes_json_text_or_an_object_and_names_the_key() -> None:
    assert parse(Form, {"vm_config": '{"cores": 4, "onboot": true}'}).vm_config == {
        "cores": "4",
        "onboot": "1",
    }
    assert parse(Form, {"vm_config": {"cores": 4}}).vm_config == {"cores": "4"}
    assert parse(Form, {"vm_config": " "}).vm_config == {}
    with pytest.raises(InvalidInput) as caught:
        parse(Form, {"vm_config": '{"args": "-S"}'})
    assert caught.value.fields == {"vm_config": "vm_config key 'args' is not allowed"}
    with pytest.raises(InvalidInput) as caught:
        parse(Form, {"vm_config": "[1]"})
    assert caught.value.fields == {"vm_config": "vm_config must be a JSON object"}
    with pytest.raises(InvalidInput) as caught:
        parse(Form, {"vm_config": "{"})
    assert caught.value.fields == {"vm_config": 'vm_config must be a JSON object, e.g. {"memory": 4096}'}


# ------------------------------------------------------------------ the facts


def test_committed_facts_match_apidata(capsys: pytest.CaptureFixture[str]) -> None:
    apidata = ground_truth.load()
    committed = json.loads((REPO / "shared" / vm_config_facts.FILE).read_text(encoding="utf-8"))
    assert committed == vm_config_facts.extract(apidata), (
        f"regenerate with `python -m shared.vm_config_facts extract {ground_truth.APIDATA}"
        f" > shared/{vm_config_facts.FILE}`"
    )
    # the documented command reproduces the file byte for byte
    assert vm_config_facts.main(["extract", str(ground_truth.APIDATA)]) == 0
    assert capsys.readouterr().out == (REPO / "shared" / vm_config_facts.FILE).read_text(encoding="utf-8")


def test_the_facts_hold_every_allowed_option() -> None:
    assert set(vm_config_facts.load()) == set(ALLOWED)


def test_an_unchecked_format_would_stop_the_module_loading() -> None:
    # every format the allowed options use is checked; one that is not would let anything through
    assert _formats_not_modelled(vm_config_facts.load()) == set()
    assert _formats_not_modelled({"x": {"format": {"y": {"format": "pve-no-such-format"}}}}) == {
        "pve-no-such-format"
    }
