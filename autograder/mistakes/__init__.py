"""Known student mistakes, implemented on purpose, one module per assignment.

Each function reproduces one common bug on the same inputs as the reference; when a
submission's output is wrong, the tests compare it with these outputs and name the
mistake it matches. Also used to test the grader itself (a buggy submission must be
recognized). Maps ``message -> output`` are built by the ``*_mistakes`` functions.
"""
