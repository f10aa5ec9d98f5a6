package org.privcomm.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.UUID
import java.util.concurrent.atomic.AtomicInteger
import kotlin.math.PI
import kotlin.math.abs
import kotlin.math.sin
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/**
 * The Kotlin API against the real core (JNA → libprivcomm_ffi) and a real relay. Tests run
 * in parallel (junit-platform.properties), each with its own accounts.
 */
class ClientTest {
    @Test
    fun twoClientsExchangeMessagesAndReopenWithKotlinSecretStore() = runBlocking<Unit> {
        val alice = Device().online()
        val bob = Device().online()
        assertEquals(ConnectionState.Connected, alice.client.connectionState())

        val bobId = alice.client.resolvePeer(bob.number)
        assertEquals(bob.userId, bobId)
        val sentId = alice.client.sendText(bobId, "hello from Kotlin")
        val received = bob.events.await { (it as? ClientEvent.MessageReceived)?.message }
        assertEquals("hello from Kotlin", received.body)
        assertEquals(alice.userId, received.peer)
        assertFalse(received.outgoing)
        assertEquals(MessageState.RECEIVED, received.state)
        alice.events.await { e ->
            (e as? ClientEvent.MessageStateChanged)?.takeIf {
                it.id == sentId && it.state == MessageState.DELIVERED
            }
        }

        bob.client.sendText(alice.userId, "hello back")
        val reply = alice.events.await { (it as? ClientEvent.MessageReceived)?.message }
        assertEquals("hello back", reply.body)

        val history = alice.client.history(bobId, null, 10u)
        assertEquals(listOf("hello back", "hello from Kotlin"), history.map { it.body })
        assertEquals(MessageState.DELIVERED, alice.client.message(sentId)?.state)
        assertEquals(listOf(bobId), alice.client.conversations().map { it.peer })
        assertEquals(
            alice.client.safetyNumber(bobId).digits,
            bob.client.safetyNumber(alice.userId).digits,
        )

        // Close, then reopen the same files with the same Kotlin SecretStore.
        alice.client.shutdown()
        expectThrows<PrivcommException.Closed> { alice.client.outboxLen() }
        val reopened = PrivcommClient.open(config(alice.dataDir), alice.secrets)
        assertEquals(alice.userId, reopened.userId())
        assertEquals(history, reopened.history(bobId, null, 10u))
        val events = EventCollector()
        reopened.subscribe(events)
        reopened.connect()
        reopened.sendText(bobId, "after reopening")
        val again = bob.events.await { (it as? ClientEvent.MessageReceived)?.message }
        assertEquals("after reopening", again.body)
        reopened.shutdown()

        // Without its secret the database does not open; with another secret neither.
        expectThrows<PrivcommException.MissingKey> {
            PrivcommClient.open(config(alice.dataDir), MemorySecretStore())
        }
        val wrong = MemorySecretStore()
        (alice.secrets as MemorySecretStore).secrets.keys.forEach { wrong.set(it, ByteArray(32) { 7 }) }
        expectThrows<PrivcommException.WrongKey> {
            PrivcommClient.open(config(alice.dataDir), wrong)
        }
        bob.client.shutdown()
    }

    @Test
    fun errorsArriveAsTypedKotlinExceptions() = runBlocking<Unit> {
        val alice = Device().online()
        val client = alice.client

        val badId = expectThrows<PrivcommException.InvalidArgument> {
            client.sendText("not-a-uuid", "hi")
        }
        assertTrue(badId.detail.contains("peer"))
        expectThrows<PrivcommException.InvalidArgument> {
            client.sendText(UUID.randomUUID().toString(), "")
        }
        expectThrows<PrivcommException.InvalidArgument> {
            client.history(UUID.randomUUID().toString(), null, 0u)
        }
        expectThrows<PrivcommException.InvalidArgument> { client.requestVerification("555-1234") }
        val callId = UUID.randomUUID().toString()
        val noCall = expectThrows<PrivcommException.NoSuchCall> { client.hangUp(callId) }
        assertEquals(callId, noCall.callId)
        expectThrows<PrivcommException.UnknownPeer> {
            client.startCall(UUID.randomUUID().toString())
        }
        val notFound = expectThrows<PrivcommException.Relay> {
            client.resolvePeer(newPhoneNumber())
        }
        assertEquals(404.toUShort(), notFound.status)
        assertEquals("not_found", notFound.code)

        client.disconnect()
        expectThrows<PrivcommException.NotConnected> {
            client.startCall(UUID.randomUUID().toString())
        }
        client.shutdown()

        // An account that was never registered cannot connect.
        val fresh = Device().open()
        expectThrows<PrivcommException.NoAccount> { fresh.client.connect() }
        fresh.client.shutdown()

        // Nothing listens on port 1.
        val offline = PrivcommClient.open(config(newDataDir(), "http://127.0.0.1:1"), MemorySecretStore())
        expectThrows<PrivcommException.Network> { offline.requestVerification(newPhoneNumber()) }
        offline.shutdown()

        expectThrows<PrivcommException.InvalidArgument> {
            PrivcommClient.open(
                ClientConfig(newDataDir(), relayUrl, CallSettings(bindAddrs = listOf("nowhere"))),
                MemorySecretStore(),
            )
        }
    }

    @Test
    fun registrationNeedsTheCodeAndALockedNumberItsPin() = runBlocking<Unit> {
        val owner = Device().open()
        owner.client.requestVerification(owner.number)
        val code = codeFor(owner.number)
        val wrong = if (code == "000000") "000001" else "000000"
        expectThrows<PrivcommException.InvalidCode> {
            owner.client.register(owner.number, wrong, null)
        }
        val userId = owner.client.register(owner.number, code, null)
        owner.client.setRegistrationLock("2468")

        // A new phone for the same number: the code alone is not enough while locked.
        val newPhone = Device(dataDir = newDataDir()).open()
        newPhone.client.requestVerification(owner.number)
        val second = codeFor(owner.number)
        val locked = expectThrows<PrivcommException.RegistrationLocked> {
            newPhone.client.register(owner.number, second, null)
        }
        assertTrue(locked.retryAfterSecs > 6uL * 86_400uL, "lapses in about 7 days")
        assertEquals(userId, newPhone.client.register(owner.number, second, "2468"))
        owner.client.shutdown()
        newPhone.client.shutdown()
    }

    @Test
    fun secretStoreFailuresAreTypedAndLocalDataCanBeReset() = runBlocking<Unit> {
        val device = Device().open()
        registerNumber(device.client, device.number)
        device.client.shutdown()

        // The Keystore key is gone (e.g. app data restored onto a new phone).
        expectThrows<PrivcommException.SecretLost> {
            PrivcommClient.open(
                config(device.dataDir),
                FailingSecretStore { SecretStoreException.KeyLost("keystore key invalidated") },
            )
        }
        // A transient keystore failure: retry later.
        expectThrows<PrivcommException.SecretStoreUnavailable> {
            PrivcommClient.open(
                config(device.dataDir),
                FailingSecretStore { SecretStoreException.Unavailable("keystore busy") },
            )
        }
        // An implementation bug (an undeclared exception) is a failure, not a crash.
        val failed = expectThrows<PrivcommException.SecretStore> {
            PrivcommClient.open(config(device.dataDir), FailingSecretStore { IllegalStateException("boom") })
        }
        assertTrue(failed.detail.contains("boom"))

        // The data is still intact for the right store...
        val reopened = PrivcommClient.open(config(device.dataDir), device.secrets)
        assertTrue(reopened.userId() != null)
        reopened.shutdown()

        // ...and the recovery path wipes it, secret included, for a fresh start.
        deleteLocalData(device.dataDir, device.secrets)
        assertTrue((device.secrets as MemorySecretStore).secrets.isEmpty())
        val fresh = PrivcommClient.open(config(device.dataDir), device.secrets)
        assertNull(fresh.userId())
        fresh.shutdown()
    }

    @Test
    fun manyCoroutinesSendAtOnceWithoutDeadlock() = runBlocking<Unit> {
        val alice = Device().online()
        val bob = Device().online()
        val bobId = alice.client.resolvePeer(bob.number)
        val senders = 16
        val perSender = 25
        val expected = (0 until senders).flatMap { s -> (0 until perSender).map { "m-$s-$it" } }

        withTimeout(120_000) {
            val sends = (0 until senders).map { s ->
                async(Dispatchers.Default) {
                    (0 until perSender).map { i -> alice.client.sendText(bobId, "m-$s-$i") }
                }
            }
            // Readers of the same client at the same time.
            val readers = (0 until 4).map {
                async(Dispatchers.Default) {
                    repeat(20) {
                        alice.client.outboxLen()
                        alice.client.history(bobId, null, 50u)
                        alice.client.connectionState()
                    }
                }
            }
            val ids = sends.awaitAll().flatten()
            readers.awaitAll()
            assertEquals(expected.size, ids.toSet().size)

            val received = mutableListOf<String>()
            while (received.size < expected.size) {
                received += bob.events.await { (it as? ClientEvent.MessageReceived)?.message?.body }
            }
            assertEquals(expected.sorted(), received.sorted())
        }
        // Each sender's messages arrive in the order it sent them.
        val history = bob.client.history(alice.userId, null, 1000u).reversed().map { it.body }
        for (s in 0 until senders) {
            val mine = history.filter { it.startsWith("m-$s-") }
            assertEquals((0 until perSender).map { "m-$s-$it" }, mine)
        }
        alice.client.shutdown()
        bob.client.shutdown()
    }

    @Test
    fun aThrowingListenerDoesNotStopTheCoreAndCancelledListenersStop() = runBlocking<Unit> {
        val alice = Device().online()
        val bob = Device().online()
        val thrown = AtomicInteger()
        bob.client.subscribe(object : EventListener {
            override fun onEvent(event: ClientEvent) {
                thrown.incrementAndGet()
                throw IllegalStateException("listener bug")
            }
        })
        val cancelled = EventCollector()
        val subscription = bob.client.subscribe(cancelled)

        val bobId = alice.client.resolvePeer(bob.number)
        alice.client.sendText(bobId, "first")
        assertEquals("first", bob.events.await { (it as? ClientEvent.MessageReceived)?.message?.body })
        assertEquals("first", cancelled.await { (it as? ClientEvent.MessageReceived)?.message?.body })
        // Each listener has its own thread: the thrower may be called a moment later.
        withTimeout(10_000) { while (thrown.get() == 0) delay(10) }

        subscription.cancel()
        assertTrue(subscription.isCancelled())
        val thrownBefore = thrown.get()
        alice.client.sendText(bobId, "second")
        assertEquals("second", bob.events.await { (it as? ClientEvent.MessageReceived)?.message?.body })
        // The thrower keeps receiving (on its own thread: wait for it)...
        withTimeout(10_000) { while (thrown.get() == thrownBefore) delay(10) }
        alice.client.sendText(bobId, "third")
        assertEquals("third", bob.events.await { (it as? ClientEvent.MessageReceived)?.message?.body })
        assertEquals(3, bob.client.history(alice.userId, null, 10u).size)
        // ...and the cancelled listener heard neither message.
        val late = generateSequence { cancelled.events.tryReceive().getOrNull() }.toList()
        assertTrue(late.none { it is ClientEvent.MessageReceived }, "events after cancel: $late")

        alice.client.shutdown()
        bob.client.shutdown()
    }

    @Test
    fun aVoiceCallConnectsCarriesAudioAndHangsUp() = runBlocking<Unit> {
        val alice = Device().online()
        val bob = Device().online()
        val bobId = alice.client.resolvePeer(bob.number)
        // Bob learns Alice's identity from a message first.
        alice.client.sendText(bobId, "calling you")
        bob.events.await { (it as? ClientEvent.MessageReceived)?.message }

        val loudFrames = AtomicInteger()
        bob.client.subscribeAudio(object : AudioSink {
            override fun onAudioFrame(callId: String, pcm: ByteArray) {
                val samples = ByteBuffer.wrap(pcm).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer()
                if (samples.remaining() == 960 && (0 until 960).any { abs(samples.get(it).toInt()) > 2000 }) {
                    loudFrames.incrementAndGet()
                }
            }
        })

        val callId = alice.client.startCall(bobId)
        val ringing = bob.events.await { e ->
            (e as? ClientEvent.CallStateChanged)?.takeIf { it.state == CallState.IncomingRinging }
        }
        assertEquals(callId, ringing.callId)
        assertEquals(alice.userId, ringing.peer)
        bob.client.acceptCall(callId)
        for (device in listOf(alice, bob)) {
            device.events.await { e ->
                (e as? ClientEvent.CallStateChanged)?.takeIf { it.state == CallState.Connected }
            }
        }
        assertEquals(CallState.Connected, alice.client.currentCall()?.state)

        // One second of a 440 Hz tone from Alice's "microphone".
        val pusher = launch(Dispatchers.Default) {
            var t = 0
            repeat(50) {
                val frame = ByteBuffer.allocate(1920).order(ByteOrder.LITTLE_ENDIAN)
                for (i in 0 until 960) {
                    frame.putShort((8000 * sin(2 * PI * 440 * (t + i) / 48_000.0)).toInt().toShort())
                }
                t += 960
                alice.client.pushAudioFrame(callId, frame.array())
                delay(20)
            }
        }
        pusher.join()
        withTimeout(10_000) { while (loudFrames.get() < 10) delay(20) }
        assertTrue(alice.client.callStats(callId).packetsSent > 0u)

        alice.client.hangUp(callId)
        for (device in listOf(alice, bob)) {
            val ended = device.events.await { e ->
                ((e as? ClientEvent.CallStateChanged)?.state as? CallState.Ended)
            }
            assertEquals(EndReason.HUNG_UP, ended.reason)
        }
        assertNull(alice.client.currentCall())
        alice.client.shutdown()
        bob.client.shutdown()
    }
}
