"""retainData: pushed images and the ACME account outlive `pulumi destroy` in stage and prod."""

from __future__ import annotations

import pytest

from tests.harness import declare, matrix_config

VOLUME = "docker:index/volume:Volume"


def retained_volumes(stack: str, **overrides: object) -> dict[str, bool]:
    values, secrets = matrix_config(stack, True, True)
    values.update(overrides)
    declaration = declare(values, secret_keys=secrets, stack=stack)
    return {r.plain_inputs["name"]: r.options["retainOnDelete"] for r in declaration.of_type(VOLUME)}


@pytest.mark.parametrize("stack", ["stage", "prod"])
def test_stage_and_prod_keep_build_and_front_data_on_destroy(stack: str) -> None:
    volumes = retained_volumes(stack)
    prefix = f"registry-stack-{stack}"
    assert volumes[f"{prefix}-build-data"] is True
    assert volumes[f"{prefix}-front-data"] is True
    # The cache refills itself from its upstream: destroying it frees the disk.
    assert volumes[f"{prefix}-cache-data"] is False


def test_dev_deletes_its_volumes_on_destroy() -> None:
    assert not any(retained_volumes("dev").values())


def test_retain_data_can_be_switched_off_in_prod() -> None:
    assert not any(retained_volumes("prod", retainData=False).values())
