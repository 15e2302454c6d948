"""Offline fallbacks for intersphinx: the Python and Django names these docs link to.

Used only when docs.python.org and docs.djangoproject.com cannot be reached (CI runs
without internet); online builds (Read the Docs) use the real inventories. Each line is
``name domain:role priority uri display-name`` as in Sphinx's inventory format, with
``$`` standing for the name in the uri and ``-`` for a display name equal to it.
"""


def _py(role: str, page: str, *names: str) -> list[str]:
    return [f"{name} py:{role} 1 library/{page}.html#$ -" for name in names]


PYTHON = [
    *_py(
        "class",
        "threading",
        "threading.Thread",
        "threading.Event",
        "threading.local",
        "threading.ExceptHookArgs",
        "threading.Barrier",
    ),
    *_py(
        "method",
        "threading",
        "threading.Thread.run",
        "threading.Thread.start",
        "threading.Thread.join",
    ),
    *_py("function", "threading", "threading.excepthook"),
    *_py(
        "class",
        "concurrent.futures",
        "concurrent.futures.ThreadPoolExecutor",
        "concurrent.futures.Executor",
        "concurrent.futures.Future",
    ),
    *_py(
        "method",
        "concurrent.futures",
        "concurrent.futures.Executor.submit",
        "concurrent.futures.Executor.map",
        "concurrent.futures.Executor.shutdown",
        "concurrent.futures.Future.result",
        "concurrent.futures.Future.add_done_callback",
    ),
    *_py("exception", "concurrent.futures", "concurrent.futures.BrokenExecutor"),
    *_py("function", "asyncio-task", "asyncio.to_thread"),
    *_py("method", "asyncio-eventloop", "asyncio.loop.run_in_executor"),
    *_py("class", "contextlib", "contextlib.ContextDecorator"),
    *_py("function", "gc", "gc.collect"),
    *_py("class", "multiprocessing", "multiprocessing.pool.ThreadPool"),
    *_py("class", "logging", "logging.Logger"),
    "BaseException py:exception 1 library/exceptions.html#$ -",
    "Exception py:exception 1 library/exceptions.html#$ -",
    "object py:class 1 library/functions.html#$ -",
    "tuple py:class 1 library/stdtypes.html#$ -",
    "int py:class 1 library/functions.html#$ -",
    "str py:class 1 library/stdtypes.html#$ -",
    "None py:data 1 library/constants.html#$ -",
    "typing.Any py:data 1 library/typing.html#$ -",
    "collections.abc.Callable py:class 1 library/collections.abc.html#$ -",
    "types.TracebackType py:class 1 library/types.html#$ -",
]


def _setting(name: str) -> str:
    return f"{name} std:setting -1 ref/settings/#std-setting-{name} -"


DJANGO = [
    *(
        _setting(name)
        for name in (
            "CONN_MAX_AGE",
            "CONN_HEALTH_CHECKS",
            "DATABASES",
            "DATABASE-OPTIONS",
            "DEBUG",
            "ATOMIC_REQUESTS",
            "DATABASE-TEST",
        )
    ),
    "django.db.transaction.atomic py:function 1 topics/db/transactions/#$ -",
    "django.db.transaction.on_commit py:function 1 topics/db/transactions/#$ -",
    "django.test.TransactionTestCase py:class 1 topics/testing/tools/#$ -",
    "django.test.TestCase py:class 1 topics/testing/tools/#$ -",
]

INVENTORIES = {
    "python": ("Python", "3.13", PYTHON),
    "django": ("Django", "5.2", DJANGO),
}
