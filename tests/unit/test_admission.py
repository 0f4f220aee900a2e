from tainted_proxy.admission import FailedLogins


def test_an_address_is_refused_after_too_many_failures_until_the_window_passes():
    f = FailedLogins(limit=3, window=60.0)
    for t in (0.0, 1.0, 2.0):
        assert not f.blocked("10.0.0.1", t)
        f.failed("10.0.0.1", t)
    assert f.blocked("10.0.0.1", 3.0)
    assert not f.blocked("10.0.0.2", 3.0)  # others log in normally
    assert not f.blocked("10.0.0.1", 61.5)  # the oldest failure left the window


def test_zero_never_refuses_and_memory_is_bounded():
    assert not FailedLogins(limit=0, window=60.0).blocked("a", 0.0)
    f = FailedLogins(limit=1, window=60.0, max_addresses=2)
    for i, a in enumerate("abc"):
        f.failed(a, float(i))
    assert not f.blocked("a", 3.0) and f.blocked("c", 3.0)
