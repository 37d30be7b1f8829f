"""The grader: notebook generation, test suites, sandbox, command line, nbgrader."""
