"""A module the registry tests patch: one of each kind of attribute."""


def greet(name):
    return f"hello {name}"


class Greeter:
    def method(self, x):
        return ("method", x)

    @staticmethod
    def static(x):
        return ("static", x)

    @classmethod
    def klass(cls, x):
        return ("class", cls.__name__, x)

    @property
    def prop(self):
        return "prop"


class Child(Greeter):
    pass
