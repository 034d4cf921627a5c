"""In-process change notifications (development mode without Redis)."""

from __future__ import annotations

import asyncio
import threading

from netsody_controller.notify import Notifier, device_key, network_key


async def test_publish_wakes_matching_waiter():
    notifier = Notifier("")
    waiter = await notifier.register([network_key("n1"), device_key("d1")])
    threading.Thread(target=notifier.publish, args=([network_key("n1")],)).start()
    assert await notifier.wait(waiter, 10) is True
    notifier.unregister(waiter)
    assert notifier.waiter_count() == 0


async def test_publish_other_key_leaves_waiter():
    notifier = Notifier("")
    waiter = await notifier.register([network_key("n1")])
    notifier.publish([network_key("n2")])
    assert await notifier.wait(waiter, 0.05) is False
    notifier.unregister(waiter)


async def test_wildcard_wakes_every_waiter():
    notifier = Notifier("")
    waiters = [await notifier.register([device_key(index)]) for index in range(3)]
    assert notifier.deliver(["*"]) == 3
    results = await asyncio.gather(*(notifier.wait(waiter, 10) for waiter in waiters))
    assert results == [True, True, True]
