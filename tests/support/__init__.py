"""Support code for the tests: renderers, validators, fakes, models and the helpers several test
modules share. Test modules import from here (and from tests.conftest), never from each other;
tests/test_layout.py holds that."""
