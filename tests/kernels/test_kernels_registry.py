"""The KERNELS registry: every entry imports, and kernel and reference share one signature."""

import inspect

from cod_fast.kernels import KERNELS


def test_registry_entries_have_matching_signatures():
    assert len(KERNELS) >= 7
    for name in KERNELS:
        kernel, reference, description = KERNELS[name]
        assert callable(kernel) and callable(reference) and description
        assert reference.__name__ == kernel.__name__ + "_reference", name
        k_params = list(inspect.signature(kernel).parameters.values())
        r_params = list(inspect.signature(reference).parameters.values())
        assert [(p.name, p.default) for p in k_params] == [(p.name, p.default) for p in r_params], name
