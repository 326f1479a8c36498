// A test driver for the Java client's KafkaShareConsumer (kafka-clients 4.x), run by
// tests/support/kafka_java.py with `java -cp <kafka-clients jar> ShareClients.java`.
//
// It reads commands from stdin, one per line, tab-separated: `<id> <verb> <args...>`, and
// answers each with lines `<id>\t...` ending with `<id>\tend` (or `<id>\terror\t<message>`).
// Every consumer runs its commands on a thread of its own (the client is not thread-safe);
// the verbs are:
//
//   new      <name> <bootstrap> <group> <topics,...> [config=value ...]
//   consume  <name> <count> <timeout_ms> <ack: accept|release|reject|hold>
//            poll until <count> records came (or the timeout), acknowledging each one as
//            told and committing after each poll; "hold" acknowledges nothing and stops
//            polling: the records stay acquired. Answers `rec <topic> <p> <offset>
//            <delivery count> <value>` per record.
//   close    <name>
//   config   <bootstrap> <group> <name=value ...>     IncrementalAlterConfigs on the group
//   describe <bootstrap> <group>     ShareGroupDescribe + DescribeShareGroupOffsets
//   schemas  <API_KEY_NAME ...>      the client's compiled schemas of those APIs
//   quit     (after every consumer's commands finished)
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ShareGroupDescription;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.types.BoundField;
import org.apache.kafka.common.protocol.types.Schema;
import org.apache.kafka.common.protocol.types.Type;
import org.apache.kafka.common.serialization.StringDeserializer;

public class ShareClients {
    static final Map<String, KafkaShareConsumer<String, String>> consumers = new ConcurrentHashMap<>();
    static final Map<String, ExecutorService> threads = new ConcurrentHashMap<>();

    static synchronized void out(String id, String line) {
        System.out.println(id + "\t" + line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] f = line.split("\t");
            if (f.length < 2) continue;
            String id = f[0];
            String verb = f[1];
            String[] a = Arrays.copyOfRange(f, 2, f.length);
            if (verb.equals("quit")) break;
            Runnable job = () -> {
                try {
                    run(id, verb, a);
                    out(id, "end");
                } catch (Throwable e) {
                    out(id, "error\t" + e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage()).replace('\n', ' '));
                }
            };
            if (verb.equals("new") || verb.equals("consume") || verb.equals("close")) {
                threads.computeIfAbsent(a[0], k -> Executors.newSingleThreadExecutor()).submit(job);
            } else {
                job.run();  // admin verbs: one at a time, on this thread
            }
        }
        for (ExecutorService t : threads.values()) {
            t.shutdown();
            t.awaitTermination(30, java.util.concurrent.TimeUnit.SECONDS);
        }
        for (KafkaShareConsumer<String, String> c : consumers.values()) {
            try { c.close(Duration.ofSeconds(5)); } catch (Exception e) { /* exiting anyway */ }
        }
        System.exit(0);
    }

    static void run(String id, String verb, String[] a) throws Exception {
        switch (verb) {
            case "new": {
                Properties p = new Properties();
                p.put("bootstrap.servers", a[1]);
                p.put("group.id", a[2]);
                p.put("client.id", a[0]);
                p.put("share.acknowledgement.mode", "explicit");
                for (int i = 4; i < a.length; i++) {
                    String[] kv = a[i].split("=", 2);
                    p.put(kv[0], kv[1]);
                }
                KafkaShareConsumer<String, String> c =
                    new KafkaShareConsumer<>(p, new StringDeserializer(), new StringDeserializer());
                c.subscribe(Arrays.asList(a[3].split(",")));
                consumers.put(a[0], c);
                break;
            }
            case "consume": {
                KafkaShareConsumer<String, String> c = consumers.get(a[0]);
                int want = Integer.parseInt(a[1]);
                long deadline = System.currentTimeMillis() + Long.parseLong(a[2]);
                String ack = a[3];
                int got = 0;
                while (got < want && System.currentTimeMillis() < deadline) {
                    ConsumerRecords<String, String> records = c.poll(Duration.ofMillis(200));
                    for (ConsumerRecord<String, String> r : records) {
                        got++;
                        out(id, "rec\t" + r.topic() + "\t" + r.partition() + "\t" + r.offset() + "\t"
                            + r.deliveryCount().map(String::valueOf).orElse("-") + "\t" + r.value());
                        if (!ack.equals("hold")) {
                            c.acknowledge(r, AcknowledgeType.valueOf(ack.toUpperCase()));
                        }
                    }
                    if (ack.equals("hold") && got > 0) break;
                    if (!records.isEmpty()) {
                        for (Map.Entry<?, Optional<org.apache.kafka.common.KafkaException>> e : c.commitSync().entrySet()) {
                            if (e.getValue().isPresent()) out(id, "ackerror\t" + e.getKey() + "\t" + e.getValue().get());
                        }
                    }
                }
                break;
            }
            case "close": {
                KafkaShareConsumer<String, String> c = consumers.remove(a[0]);
                if (c != null) c.close(Duration.ofSeconds(10));
                break;
            }
            case "config": {
                try (Admin admin = Admin.create(Map.of("bootstrap.servers", a[0]))) {
                    List<AlterConfigOp> ops = new ArrayList<>();
                    for (int i = 2; i < a.length; i++) {
                        String[] kv = a[i].split("=", 2);
                        ops.add(new AlterConfigOp(new ConfigEntry(kv[0], kv[1]), AlterConfigOp.OpType.SET));
                    }
                    ConfigResource group = new ConfigResource(ConfigResource.Type.GROUP, a[1]);
                    admin.incrementalAlterConfigs(Map.of(group, ops)).all().get();
                }
                break;
            }
            case "describe": {
                try (Admin admin = Admin.create(Map.of("bootstrap.servers", a[0]))) {
                    ShareGroupDescription d = admin.describeShareGroups(List.of(a[1])).all().get().get(a[1]);
                    out(id, "group\t" + d.groupId() + "\t" + d.groupState() + "\t" + d.members().size());
                    Map<String, ListShareGroupOffsetsSpec> spec = new HashMap<>();
                    spec.put(a[1], new ListShareGroupOffsetsSpec());
                    admin.listShareGroupOffsets(spec).partitionsToOffsetInfo(a[1]).get().forEach(
                        (tp, o) -> out(id, "offset\t" + tp.topic() + "\t" + tp.partition() + "\t"
                            + (o == null ? "-" : o.startOffset() + "\t" + o.lag().map(String::valueOf).orElse("-"))));
                }
                break;
            }
            case "schemas": {
                for (String name : a) {
                    ApiKeys k = ApiKeys.valueOf(name);
                    out(id, "api\t" + k.id + "\t" + k.oldestVersion() + "\t" + k.latestVersion(true));
                    for (short v = k.oldestVersion(); v <= k.latestVersion(true); v++) {
                        dump(id, k.id + "\t" + v + "\trequest\t", "", k.messageType.requestSchemas()[v]);
                        dump(id, k.id + "\t" + v + "\tresponse\t", "", k.messageType.responseSchemas()[v]);
                    }
                }
                break;
            }
            default:
                throw new IllegalArgumentException("unknown verb " + verb);
        }
    }

    // one line per field: its path (a.b.c), the wire type name and whether it is nullable
    static void dump(String id, String prefix, String path, Schema s) {
        for (BoundField f : s.fields()) {
            if (f.def.name.equals("_tagged_fields")) continue;
            Type t = f.def.type;
            String name = path + f.def.name;
            String type = t instanceof Schema ? "STRUCT" : t.toString().replaceAll("\\(.*", "");
            out(id, "field\t" + prefix + name + "\t" + type + "\t" + t.isNullable());
            Type inner = t.arrayElementType().orElse(t);
            if (inner instanceof Schema) dump(id, prefix, name + ".", (Schema) inner);
        }
    }
}
