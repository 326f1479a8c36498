/*
 * The Java Kafka client against a secured broker: every client built from one properties
 * file (TLS truststore, SASL mechanism and JAAS login), as an application would configure it.
 *
 *   java -cp CLASSPATH SecureClients.java PROPERTIES TOPIC GROUP COUNT QUOTA_USER
 *
 * 1. Admin.alterClientQuotas sets producer_byte_rate on user QUOTA_USER and
 *    describeClientQuotas reads it back ("quota" lines) — what kafka-configs does;
 * 2. a KafkaProducer sends COUNT records (key kI, value "java I") and waits for each;
 * 3. a KafkaConsumer in GROUP reads TOPIC from the earliest offset until it has COUNT
 *    records ("rec" lines: key, value).
 * Output lines are tab-separated; a failure prints "error" and exits 1.
 */

import java.io.FileInputStream;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class SecureClients {
    public static void main(String[] args) throws Exception {
        try {
            run(args);
        } catch (Throwable e) {
            Throwable root = e.getCause() != null ? e.getCause() : e;
            System.out.println("error\t" + root.getClass().getSimpleName() + ": "
                + String.valueOf(root.getMessage()).replace('\n', ' '));
            System.out.flush();
            System.exit(1);
        }
        System.exit(0);
    }

    static void run(String[] args) throws Exception {
        Properties common = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            common.load(in);
        }
        String topic = args[1];
        String group = args[2];
        int count = Integer.parseInt(args[3]);
        String quotaUser = args[4];

        try (Admin admin = Admin.create(common)) {
            ClientQuotaEntity entity = new ClientQuotaEntity(Map.of(ClientQuotaEntity.USER, quotaUser));
            admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity,
                List.of(new ClientQuotaAlteration.Op("producer_byte_rate", 1048576.0))))).all().get();
            ClientQuotaFilter filter = ClientQuotaFilter.containsOnly(
                List.of(ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.USER, quotaUser)));
            admin.describeClientQuotas(filter).entities().get().forEach((e, values) ->
                values.forEach((k, v) -> System.out.println(
                    "quota\t" + e.entries().get(ClientQuotaEntity.USER) + "\t" + k + "\t" + v.longValue())));
        }

        Properties p = new Properties();
        p.putAll(common);
        try (KafkaProducer<String, String> producer =
                 new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < count; i++) {
                producer.send(new ProducerRecord<>(topic, "k" + i, "java " + i)).get();
            }
        }

        Properties c = new Properties();
        c.putAll(common);
        c.put("group.id", group);
        c.put("auto.offset.reset", "earliest");
        c.put("enable.auto.commit", "false");
        try (KafkaConsumer<String, String> consumer =
                 new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of(topic));
            int got = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (got < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    got++;
                    System.out.println("rec\t" + r.key() + "\t" + r.value());
                }
            }
            consumer.commitSync();
        }
        System.out.flush();
    }
}
