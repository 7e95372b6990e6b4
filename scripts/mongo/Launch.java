import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.Document;
import io.netty.channel.embedded.EmbeddedChannel;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * Starts mongo-java-server on 127.0.0.1:<port>, in memory or persisted to an H2 file.
 * The stock main advertises wire version 8; driver 7 needs >= 9, so we advertise MongoDB 7.0
 * (wire 21) and enable the oplog so that change streams deliver events.
 *
 * The stock oplog is never trimmed, and every change stream's getMore scans all of it: after a few
 * hundred thousand writes each idle stream costs the server tens of milliseconds ten times a second,
 * and everything else waits. So, like a real server's capped oplog, it keeps a window: entries older
 * than the retention (system property oplog.retention.seconds, default 60) are removed once a second.
 * A stream that falls further behind than that misses what was removed (a real server would answer
 * ChangeStreamHistoryLost); every reader here treats change events as hints and re-reads.
 * Usage: java [-Doplog.retention.seconds=N] -cp <classpath> Launch.java <port> [h2-file]
 */
public class Launch {
    record Version(List<Integer> getVersionArray, int getWireVersion) implements MongoVersion {}

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        MongoBackend backend = args.length > 1 ? new H2Backend(args[1]) : new MemoryBackend();
        backend.version(new Version(List.of(7, 0, 0), 21));
        MongoServer server = new MongoServer(backend);
        server.enableOplog();
        server.bind("127.0.0.1", port);
        trimOplog(backend, Duration.ofSeconds(Long.getLong("oplog.retention.seconds", 60)));
        // A graceful stop (SIGTERM) flushes the H2 file; SIGKILL may lose recent writes.
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdown));
        System.out.println("offline-mongo listening on 127.0.0.1:" + server.getLocalAddress().getPort());
        System.out.flush();
        Thread.currentThread().join();
    }

    private static void trimOplog(MongoBackend backend, Duration retention) {
        // Without an index a removal finds its entry by scanning the collection; with a unique index on
        // ts (each entry's own timestamp) it is a lookup.
        backend.handleCommand(new EmbeddedChannel(), "local", "createIndexes", new Document("createIndexes", "oplog.rs")
            .append("indexes", List.of(new Document("key", new Document("ts", 1)).append("name", "ts_1").append("unique", true))));
        MongoCollection<?> oplog = backend.resolveDatabase("local").resolveCollection("oplog.rs", true);
        var trimmer = Executors.newSingleThreadScheduledExecutor(task -> {
            Thread thread = new Thread(task, "oplog-trimmer");
            thread.setDaemon(true);
            return thread;
        });
        trimmer.scheduleWithFixedDelay(() -> {
            try {
                Instant cutoff = Instant.now().minus(retention);
                oplog.deleteDocuments(new Document("wall", new Document("$lt", cutoff)), 0);
            } catch (RuntimeException e) {
                System.err.println("offline-mongo: oplog trim failed: " + e);
            }
        }, 1, 1, TimeUnit.SECONDS);
    }
}
