package org.privcomm.core

import kotlinx.coroutines.runBlocking

/**
 * A program, not a test (bindings/tests/kotlin_jvm.rs runs it in its own JVM): two clients
 * exchange messages with a listener subscribed and more still in flight, then the JVM exits
 * without `shutdown()`. The process must exit cleanly (status 0), not abort.
 */
fun main() = runBlocking {
    val alice = Device().online()
    val bob = Device().online()
    val bobId = alice.client.resolvePeer(bob.number)
    alice.client.sendText(bobId, "first")
    bob.events.await { (it as? ClientEvent.MessageReceived)?.message }
    repeat(50) { alice.client.sendText(bobId, "in flight $it") }
    println("exiting without shutdown")
}
