"""A second target module, imported by targets.cross_impls (see test_patching)."""


def wave(name):
    return f"bye {name}"
