package org.privcomm.android

import java.io.File
import java.io.IOException
import java.security.GeneralSecurityException
import java.security.InvalidKeyException
import java.security.KeyStoreException
import java.security.ProviderException
import javax.crypto.AEADBadTagException
import javax.crypto.Cipher
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec
import org.privcomm.core.SecretStore
import org.privcomm.core.SecretStoreException

/**
 * Where the wrapping key comes from: the Android Keystore on a phone
 * ([AndroidKeystoreKeySource]), any JCE AES key elsewhere (the JVM tests).
 */
interface WrappingKeySource {
    /** The key, or null if it does not exist (never created, or lost). */
    fun existingKey(): SecretKey?

    /** Creates the key; called only when [existingKey] is null and a secret is being stored. */
    fun createKey(): SecretKey

    /**
     * What a cryptographic failure means for the app. The default covers the JCE; the
     * Keystore source adds its own exception types.
     */
    fun classify(e: Exception): SecretStoreException = defaultClassification(e)
}

/** JCE failures: a wrong key is permanent, provider and I/O trouble is transient. */
fun defaultClassification(e: Exception): SecretStoreException =
    when (e) {
        // GCM authentication failed: the key is not the one that wrapped the secret.
        is AEADBadTagException -> SecretStoreException.KeyLost("the wrapping key no longer opens the secret")
        is KeyStoreException, is ProviderException, is IOException ->
            SecretStoreException.Unavailable("${e.javaClass.simpleName}: key store failed")
        is InvalidKeyException -> SecretStoreException.Unavailable("the wrapping key cannot be used now")
        is GeneralSecurityException -> SecretStoreException.Failed("${e.javaClass.simpleName}")
        else -> SecretStoreException.Failed("${e.javaClass.simpleName}")
    }

/**
 * A [SecretStore] that keeps each secret only wrapped (AES-256-GCM under a key from
 * [keys]) in its own file under [dir]; the plaintext secret never touches the disk.
 *
 * File format: version byte `1`, the 12-byte GCM IV, then ciphertext and 16-byte tag; the
 * secret's name is the associated data, so a file renamed to another secret's name does not
 * open. Writes go to a temporary file renamed into place, so a crash leaves the old or the
 * new secret, never half of one.
 *
 * Errors are typed for recovery: [SecretStoreException.KeyLost] when the wrapping key is
 * gone or wrong or the file is corrupt (the database it opens is lost: the app offers
 * `deleteLocalData` and a fresh registration, instead of crashing on every start),
 * [SecretStoreException.Unavailable] for failures that may pass (retry later).
 */
class WrappedSecretStore(
    private val dir: File,
    private val keys: WrappingKeySource,
) : SecretStore {
    private val lock = Any()

    override fun get(name: String): ByteArray? {
        synchronized(lock) {
            val file = fileFor(name)
            val blob =
                try {
                    if (!file.exists()) return null
                    file.readBytes()
                } catch (e: IOException) {
                    throw SecretStoreException.Unavailable("cannot read the stored secret")
                }
            if (blob.size < HEADER + TAG_BYTES || blob[0] != VERSION) {
                throw SecretStoreException.KeyLost("the stored secret is corrupt")
            }
            val key = keyOrThrow { keys.existingKey() }
                ?: throw SecretStoreException.KeyLost("the wrapping key is gone")
            try {
                val cipher = Cipher.getInstance(TRANSFORMATION)
                cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(TAG_BYTES * 8, blob, 1, IV_BYTES))
                cipher.updateAAD(name.toByteArray(Charsets.UTF_8))
                return cipher.doFinal(blob, HEADER, blob.size - HEADER)
            } catch (e: Exception) {
                throw keys.classify(e)
            }
        }
    }

    override fun set(name: String, secret: ByteArray) {
        synchronized(lock) {
            val file = fileFor(name)
            val key = keyOrThrow { keys.existingKey() ?: keys.createKey() }!!
            val blob =
                try {
                    val cipher = Cipher.getInstance(TRANSFORMATION)
                    // The provider picks a fresh random IV (Android Keystore insists on it).
                    cipher.init(Cipher.ENCRYPT_MODE, key)
                    cipher.updateAAD(name.toByteArray(Charsets.UTF_8))
                    val sealed = cipher.doFinal(secret)
                    val iv = cipher.iv
                    if (iv.size != IV_BYTES) {
                        throw SecretStoreException.Failed("unexpected IV length ${iv.size}")
                    }
                    byteArrayOf(VERSION) + iv + sealed
                } catch (e: SecretStoreException) {
                    throw e
                } catch (e: Exception) {
                    throw keys.classify(e)
                } finally {
                    secret.fill(0)
                }
            try {
                dir.mkdirs()
                val temp = File(dir, "$name.tmp")
                temp.writeBytes(blob)
                if (!temp.renameTo(file)) {
                    temp.delete()
                    throw IOException("rename failed")
                }
            } catch (e: IOException) {
                throw SecretStoreException.Unavailable("cannot write the stored secret")
            }
        }
    }

    override fun delete(name: String) {
        synchronized(lock) {
            val file = fileFor(name)
            if (file.exists() && !file.delete()) {
                throw SecretStoreException.Unavailable("cannot delete the stored secret")
            }
        }
    }

    private fun fileFor(name: String): File {
        if (name.isEmpty() || name.length > 200 || !name.all { it.isLetterOrDigit() || it in "._-" }) {
            throw SecretStoreException.Failed("invalid secret name")
        }
        return File(dir, "$name.sealed")
    }

    private inline fun keyOrThrow(get: () -> SecretKey?): SecretKey? =
        try {
            get()
        } catch (e: SecretStoreException) {
            throw e
        } catch (e: Exception) {
            throw keys.classify(e)
        }

    private companion object {
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val VERSION: Byte = 1
        const val IV_BYTES = 12
        const val TAG_BYTES = 16
        const val HEADER = 1 + IV_BYTES
    }
}
