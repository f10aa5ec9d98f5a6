package org.privcomm.android

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.security.KeyStore
import java.util.UUID
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertThrows
import org.junit.Test
import org.junit.runner.RunWith
import org.privcomm.core.SecretStoreException

/**
 * The Keystore store on a device or emulator (`gradle connectedAndroidTest`): real
 * Keystore keys, and a deleted key reported as `KeyLost`. Its storage logic is also
 * covered on the JVM by WrappedSecretStoreTest.
 */
@RunWith(AndroidJUnit4::class)
class AndroidKeystoreSecretStoreTest {
    private val context = InstrumentationRegistry.getInstrumentation().targetContext

    @Test
    fun storesOnlyWrappedAndReportsALostKey() {
        val alias = "org.privcomm.test.${UUID.randomUUID()}"
        val name = "privcomm.test.${UUID.randomUUID()}"
        val store = AndroidKeystoreSecretStore(context, alias)
        val secret = ByteArray(32) { (it * 3).toByte() }

        store.set(name, secret.clone())
        assertArrayEquals(secret, store.get(name))

        KeyStore.getInstance("AndroidKeyStore").apply { load(null) }.deleteEntry(alias)
        assertThrows(SecretStoreException.KeyLost::class.java) { store.get(name) }

        store.delete(name)
        assertNull(store.get(name))
    }
}
