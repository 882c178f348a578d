"""What every verb of the API shares: its typed request, a pool opened once, the Trainer
settings a verb trains with.

Each verb is a frozen `Request` (its arguments, checked and bounded in one place, `check`)
and a flow that takes it; `verb` joins them into the public function, whose signature is the
request's fields: ``lg.assemble(pool, size)`` builds an `AssembleRequest`, checks it, runs
it. The CLI builds the same request from its flags (`Request.from_flags`) and prints what
``run()`` returns, so a flag and a keyword can never mean two things."""

from __future__ import annotations

import dataclasses
import functools
import inspect

from learngene.pool.store import Pool


@dataclasses.dataclass(frozen=True)
class Request:
    """A verb's arguments, frozen; `check` refuses a bad one in one line before any work."""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse a bad argument (a `UserError` naming it); normalise with `_set`."""

    def _set(self, name: str, value) -> None:
        # A frozen request still normalises its own fields once, while it is checked.
        object.__setattr__(self, name, value)

    def run(self):
        """Do what the request asks; what the verb's public function returns."""
        return type(self)._flow(self)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def build(cls, *args, **kwargs) -> Request:
        """The request a call of the verb's function makes (a request that takes further
        keywords, like assemble's spec fields, folds them in here)."""
        return cls(*args, **kwargs)

    @classmethod
    def from_flags(cls, ns, *args, **given) -> Request:
        """The request the parsed flags ``ns`` ask for: each keyword field comes from ``given``
        when there, else from the flag of its name, else its default; ``args`` fill the
        positional ones. So a CLI verb names only what differs between its flags and the API,
        and a new field with a flag of its name needs no line in the CLI."""
        kw = {}
        for f in [f for f in dataclasses.fields(cls) if f.init][len(args) :]:
            if f.name in given:
                kw[f.name] = given.pop(f.name)
            elif f.name in vars(ns):
                kw[f.name] = getattr(ns, f.name)
        if given:
            raise TypeError(f"{cls.__name__} has no {', '.join(given)}")
        return cls(*args, **kw)


def verb(request: type[Request]):
    """The public function of a verb: it takes the request's fields (its signature is the
    request's, for help() and the docs), builds the request (checked) and runs ``flow``."""

    def wrap(flow):
        @functools.wraps(flow)
        def api(*args, **kwargs):
            return flow(request.build(*args, **kwargs))

        sig = inspect.signature(request)
        params = list(sig.parameters.values())
        if "build" in vars(request):  # it takes further keywords
            params.append(inspect.Parameter("settings", inspect.Parameter.VAR_KEYWORD))
        ret = inspect.signature(flow).return_annotation
        api.__signature__ = sig.replace(parameters=params, return_annotation=ret)
        del api.__wrapped__  # the signature is the request's, not the flow's (griffe follows __wrapped__)
        api.Request = request
        request._flow = staticmethod(flow)
        return api

    return wrap


def _open(pool) -> Pool:
    return pool if isinstance(pool, Pool) else Pool.open(pool)


def _targs(trainer_args, label: str, progress: bool = True):
    """The Trainer settings a verb trains with: the caller's, else quiet defaults (a bar on a
    terminal, a line per epoch in a log)."""
    import sys

    from learngene.core.training import TrainerArgs

    if trainer_args is not None:
        return trainer_args
    tty = sys.stderr.isatty()
    return TrainerArgs(progress=progress and tty, log_lines=progress and not tty, label=label)
