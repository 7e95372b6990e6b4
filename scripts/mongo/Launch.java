import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.util.List;

/**
 * Starts mongo-java-server on 127.0.0.1:<port>, in memory or persisted to an H2 file.
 * The stock main advertises wire version 8; driver 7 needs >= 9, so we advertise MongoDB 7.0
 * (wire 21) and enable the oplog so that change streams deliver events.
 * Usage: java -cp <classpath> Launch.java <port> [h2-file]
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
        // A graceful stop (SIGTERM) flushes the H2 file; SIGKILL may lose recent writes.
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdown));
        System.out.println("offline-mongo listening on 127.0.0.1:" + server.getLocalAddress().getPort());
        System.out.flush();
        Thread.currentThread().join();
    }
}
