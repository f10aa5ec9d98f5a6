package org.privcomm.core

import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** The block list, dropped-message counts and error categories, from Kotlin. */
class TrustTest {
    @Test
    fun aBlockedPeersMessagesAreDroppedAndSendingToThemIsRefused() = runBlocking<Unit> {
        val alice = Device().online()
        val bob = Device().online()
        val bobId = alice.client.resolvePeer(bob.number)
        val aliceId = bob.client.resolvePeer(alice.number)
        assertTrue(bob.client.blockPeer(aliceId))
        assertFalse(bob.client.blockPeer(aliceId))
        assertEquals(listOf(aliceId), bob.client.blockedPeers())
        val refused = expectThrows<PrivcommException.PeerBlocked> {
            bob.client.sendText(aliceId, "hi")
        }
        assertEquals(aliceId, refused.peer)
        assertEquals(ErrorCategory.PEER, refused.category)

        repeat(5) { alice.client.sendText(bobId, "spam $it") }
        withTimeout(60_000) {
            while (bob.client.droppedMessages().blocked < 5uL) delay(20)
        }
        assertTrue(bob.client.history(aliceId, null, 100u).isEmpty())
        assertTrue(bob.client.unblockPeer(aliceId))
        assertTrue(bob.client.blockedPeers().isEmpty())
        alice.client.shutdown()
        bob.client.shutdown()
    }

    @Test
    fun everyErrorCarriesASentenceAndACategory() = runBlocking<Unit> {
        val fresh = Device().open()
        val noAccount = expectThrows<PrivcommException.NoAccount> { fresh.client.connect() }
        assertEquals("no account in this store", noAccount.detail)
        assertTrue(noAccount.message!!.contains("no account in this store"))
        assertEquals(ErrorCategory.ACCOUNT, noAccount.category)

        val alice = Device().online()
        val stranger = java.util.UUID.randomUUID().toString()
        val unknown = expectThrows<PrivcommException.UnknownPeer> {
            alice.client.sendText(stranger, "hi")
        }
        assertEquals(ErrorCategory.PEER, unknown.category)
        assertTrue(unknown.detail.contains(stranger))
        val bad = expectThrows<PrivcommException.InvalidArgument> {
            alice.client.history(stranger, null, 1001u)
        }
        assertEquals(ErrorCategory.INVALID_INPUT, bad.category)
        assertTrue(bad.detail.isNotEmpty())
        alice.client.shutdown()
        val closed = expectThrows<PrivcommException.Closed> { alice.client.outboxLen() }
        assertEquals(ErrorCategory.CLOSED, closed.category)
        assertTrue(closed.detail.isNotEmpty())
        fresh.client.shutdown()
    }
}
