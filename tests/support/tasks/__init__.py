"""Task modules that `taskd run` subprocesses load (``TASKD_TASKS__MODULES``), and the tables
their tasks write, which the tests create and read."""
