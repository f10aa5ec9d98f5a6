package org.privcomm.android

import android.content.Context
import android.os.Build
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyPermanentlyInvalidatedException
import android.security.keystore.KeyProperties
import android.security.keystore.StrongBoxUnavailableException
import android.security.keystore.UserNotAuthenticatedException
import java.io.File
import java.security.KeyStore
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import org.privcomm.core.SecretStore
import org.privcomm.core.SecretStoreException

/**
 * The core's [SecretStore] on Android: each secret is wrapped with a non-exportable
 * AES-256-GCM key that lives in the Android Keystore (StrongBox when the device has one)
 * and stored only wrapped, in the app's no-backup directory.
 *
 * ```kotlin
 * val secrets = AndroidKeystoreSecretStore(context)
 * val client = try {
 *     PrivcommClient.open(ClientConfig(File(context.noBackupFilesDir, "privcomm").path, url), secrets)
 * } catch (e: PrivcommException.SecretLost) {
 *     // The Keystore key is gone (restore onto a new phone, keystore reset). Tell the user,
 *     // then start over instead of failing on every launch:
 *     deleteLocalData(dataDir, secrets); PrivcommClient.open(config, secrets)
 * } catch (e: PrivcommException.SecretStoreUnavailable) {
 *     // Transient (device locked, keystore busy): retry later, nothing is lost.
 * }
 * ```
 */
class AndroidKeystoreSecretStore(
    context: Context,
    keyAlias: String = DEFAULT_ALIAS,
) : SecretStore by WrappedSecretStore(
    File(context.applicationContext.noBackupFilesDir, "privcomm-secrets"),
    AndroidKeystoreKeySource(keyAlias),
) {
    companion object {
        /** The Keystore alias of the wrapping key. */
        const val DEFAULT_ALIAS = "org.privcomm.wrap"
    }
}

/** The wrapping key in the Android Keystore. */
class AndroidKeystoreKeySource(private val alias: String) : WrappingKeySource {
    private fun keyStore(): KeyStore = KeyStore.getInstance(PROVIDER).apply { load(null) }

    override fun existingKey(): SecretKey? = keyStore().getKey(alias, null) as SecretKey?

    override fun createKey(): SecretKey =
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            try {
                generate(strongBox = true)
            } catch (e: StrongBoxUnavailableException) {
                generate(strongBox = false)
            }
        } else {
            generate(strongBox = false)
        }

    private fun generate(strongBox: Boolean): SecretKey {
        val spec =
            KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .setRandomizedEncryptionRequired(true)
                .apply { if (strongBox && Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) setIsStrongBoxBacked(true) }
                .build()
        val generator = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, PROVIDER)
        generator.init(spec)
        return generator.generateKey()
    }

    override fun classify(e: Exception): SecretStoreException =
        when (e) {
            // The key exists but can never be used again (lock screen removed, biometrics
            // changed, keystore reset).
            is KeyPermanentlyInvalidatedException ->
                SecretStoreException.KeyLost("the Keystore key was permanently invalidated")
            is UserNotAuthenticatedException ->
                SecretStoreException.Unavailable("the device must be unlocked first")
            else -> defaultClassification(e)
        }

    private companion object {
        const val PROVIDER = "AndroidKeyStore"
    }
}
