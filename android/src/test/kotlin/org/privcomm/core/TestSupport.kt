package org.privcomm.core

import java.nio.file.Files
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.fail

/** The relay the test runner started (bindings/tests/kotlin_jvm.rs). */
val relayUrl: String =
    System.getProperty("privcomm.relay") ?: error("set -Dprivcomm.relay to the relay's URL")

/** The relay's code inbox (bindings/tests/kotlin_jvm.rs): where its texts arrive. */
val codesUrl: String =
    System.getProperty("privcomm.codes") ?: error("set -Dprivcomm.codes to the code inbox's URL")

private val http: java.net.http.HttpClient = java.net.http.HttpClient.newHttpClient()

/** The code the relay texted to `number` (taken from its inbox, waiting up to 20 s). */
suspend fun codeFor(number: String): String {
    val uri = java.net.URI.create(
        "$codesUrl/codes/" + java.net.URLEncoder.encode(number, Charsets.UTF_8),
    )
    val deadline = System.currentTimeMillis() + 20_000
    while (true) {
        val response = http.send(
            java.net.http.HttpRequest.newBuilder(uri).GET().build(),
            java.net.http.HttpResponse.BodyHandlers.ofString(),
        )
        if (response.statusCode() == 200) return response.body().trim()
        if (System.currentTimeMillis() > deadline) error("no code arrived for $number")
        kotlinx.coroutines.delay(50)
    }
}

/** Verifies `number` and registers `client` with it; returns the user id. */
suspend fun registerNumber(client: PrivcommClient, number: String): String {
    client.requestVerification(number)
    return client.register(number, codeFor(number), null)
}

/** A fresh international number; the relay keeps accounts, so each test uses new ones. */
fun newPhoneNumber(): String = "+1555" + (1_000_000..9_999_999).random()

fun newDataDir(): String = Files.createTempDirectory("privcomm-kotlin").toString()

/** Secrets in memory: the simplest Kotlin `SecretStore`, as an app would write one. */
class MemorySecretStore : SecretStore {
    val secrets = ConcurrentHashMap<String, ByteArray>()

    override fun get(name: String): ByteArray? = secrets[name]?.clone()

    override fun set(name: String, secret: ByteArray) {
        secrets[name] = secret.clone()
    }

    override fun delete(name: String) {
        secrets.remove(name)
    }
}

/** A secret store whose reads fail the way a broken Android Keystore does. */
class FailingSecretStore(private val failure: () -> Throwable) : SecretStore {
    override fun get(name: String): ByteArray? = throw failure()

    override fun set(name: String, secret: ByteArray) {
        throw failure()
    }

    override fun delete(name: String) {
        throw failure()
    }
}

/** Collects events into a channel the test reads from. */
class EventCollector : EventListener {
    val events = Channel<ClientEvent>(Channel.UNLIMITED)
    val calls = AtomicInteger()

    override fun onEvent(event: ClientEvent) {
        calls.incrementAndGet()
        events.trySend(event)
    }

    /** Waits for the first event `pick` maps to non-null, skipping the others. */
    suspend fun <T : Any> await(timeoutMs: Long = 60_000, pick: (ClientEvent) -> T?): T =
        withTimeout(timeoutMs) {
            var found: T? = null
            while (found == null) {
                found = pick(events.receive())
            }
            found
        }
}

fun config(dataDir: String, server: String = relayUrl): ClientConfig =
    ClientConfig(
        dataDir = dataDir,
        serverUrl = server,
        call = CallSettings(bindAddrs = listOf("127.0.0.1:0")),
    )

/** One phone: a data directory, a secret store, a client and its event collector. */
class Device(
    val secrets: SecretStore = MemorySecretStore(),
    val dataDir: String = newDataDir(),
) {
    val number = newPhoneNumber()
    val events = EventCollector()
    lateinit var client: PrivcommClient
    lateinit var userId: String

    suspend fun open(): Device {
        client = PrivcommClient.open(config(dataDir), secrets)
        client.subscribe(events)
        return this
    }

    /** Opens, registers and connects. */
    suspend fun online(): Device {
        open()
        userId = registerNumber(client, number)
        client.connect()
        return this
    }
}

/** Runs `block` and returns the exception of type `E` it must throw. */
suspend inline fun <reified E : Throwable> expectThrows(block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        fail<Unit>("expected ${E::class.simpleName}, got $e")
    }
    fail<Unit>("expected ${E::class.simpleName}, nothing was thrown")
    throw IllegalStateException("unreachable")
}
