package org.privcomm.android

import java.io.File
import java.nio.file.Files
import java.security.KeyStoreException
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Assertions.assertThrows
import org.privcomm.core.PrivcommClient
import org.privcomm.core.PrivcommException
import org.privcomm.core.SecretStoreException
import org.privcomm.core.config
import org.privcomm.core.deleteLocalData
import org.privcomm.core.expectThrows
import org.privcomm.core.newDataDir
import org.privcomm.core.newPhoneNumber
import org.privcomm.core.registerNumber

/**
 * The storage and recovery logic of [AndroidKeystoreSecretStore] on the JVM: the same
 * [WrappedSecretStore] with a JCE AES key standing in for the Keystore key (the Keystore
 * itself exists only on a device).
 */
class JceKeySource : WrappingKeySource {
    @Volatile var key: SecretKey? = null
    @Volatile var failure: Exception? = null

    override fun existingKey(): SecretKey? {
        failure?.let { throw it }
        return key
    }

    override fun createKey(): SecretKey =
        KeyGenerator.getInstance("AES").apply { init(256) }.generateKey().also { key = it }
}

class WrappedSecretStoreTest {
    private val dir: File = Files.createTempDirectory("privcomm-secrets").toFile()
    private val keys = JceKeySource()
    private val store = WrappedSecretStore(dir, keys)

    @Test
    fun secretsAreStoredOnlyWrapped() {
        val secret = ByteArray(32) { (it * 7 + 1).toByte() }
        store.set("privcomm.data-key-wrap.ab12", secret.clone())
        assertArrayEquals(secret, store.get("privcomm.data-key-wrap.ab12"))
        assertNull(store.get("privcomm.data-key-wrap.other"))

        val files = dir.listFiles()!!.filter { it.isFile }
        assertEquals(1, files.size)
        val onDisk = files[0].readBytes()
        assertEquals(1 + 12 + 32 + 16, onDisk.size)
        assertFalse(onDisk.toList().windowed(8).any { it == secret.take(8) }, "plaintext on disk")

        store.delete("privcomm.data-key-wrap.ab12")
        store.delete("privcomm.data-key-wrap.ab12")
        assertNull(store.get("privcomm.data-key-wrap.ab12"))
        assertThrows(SecretStoreException.Failed::class.java) { store.get("../escape") }
    }

    @Test
    fun aLostReplacedOrFailingKeyIsTyped() {
        store.set("a", ByteArray(32) { 1 })
        // Another secret's file under this name does not open (the name is authenticated).
        store.set("b", ByteArray(32) { 2 })
        File(dir, "b.sealed").copyTo(File(dir, "a.sealed"), overwrite = true)
        assertThrows(SecretStoreException.KeyLost::class.java) { store.get("a") }

        store.set("a", ByteArray(32) { 1 })
        keys.createKey() // the Keystore key replaced
        assertThrows(SecretStoreException.KeyLost::class.java) { store.get("a") }

        keys.key = null // the Keystore key deleted
        assertThrows(SecretStoreException.KeyLost::class.java) { store.get("b") }

        keys.failure = KeyStoreException("keystore daemon died")
        assertThrows(SecretStoreException.Unavailable::class.java) { store.get("b") }
        keys.failure = null

        File(dir, "b.sealed").writeBytes(byteArrayOf(9, 9, 9))
        assertThrows(SecretStoreException.KeyLost::class.java) { store.get("b") }
    }

    @Test
    fun theCoreRecoversFromALostKeystoreKey() = runBlocking<Unit> {
        val dataDir = newDataDir()
        val client = PrivcommClient.open(config(dataDir), store)
        val userId = registerNumber(client, newPhoneNumber())
        client.shutdown()

        val reopened = PrivcommClient.open(config(dataDir), store)
        assertEquals(userId, reopened.userId())
        reopened.shutdown()

        keys.failure = KeyStoreException("transient")
        expectThrows<PrivcommException.SecretStoreUnavailable> {
            PrivcommClient.open(config(dataDir), store)
        }
        keys.failure = null

        keys.key = null
        expectThrows<PrivcommException.SecretLost> { PrivcommClient.open(config(dataDir), store) }
        // Again on the next launch: an error to handle, not a crash loop.
        expectThrows<PrivcommException.SecretLost> { PrivcommClient.open(config(dataDir), store) }

        deleteLocalData(dataDir, store)
        assertTrue(dir.listFiles()!!.none { it.name.endsWith(".sealed") })
        val fresh = PrivcommClient.open(config(dataDir), store)
        assertNull(fresh.userId())
        assertTrue(registerNumber(fresh, newPhoneNumber()).isNotEmpty())
        fresh.shutdown()
    }
}
