"""How the suite shares out over processes (make test: pytest-xdist ``-n 2``, ``--dist loadfile`` in
pytest.ini): a test file is the unit one worker runs whole. Checked on the tests this session collected, so a
new file is held to the same rules."""


def test_the_ray_tests_live_in_one_file(request):
    """Two Ray test clusters at once would share the machine's /tmp/ray and crowd its two cores with four
    one-CPU nodes: every test that uses one is in one file, so one worker runs them one after another."""
    files = {item.nodeid.split("::")[0] for item in request.session.items if "ray_cluster" in item.fixturenames}
    assert len(files) <= 1, f"the ray_cluster fixture is used in {sorted(files)}: keep the Ray tests in one file"
