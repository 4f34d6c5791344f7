// Minimal Unity client for an EEICT Stream live stream (docs/protocol.md).
// Needs NativeWebSocket (endel/NativeWebSocket) and MessagePack-CSharp; see README.md.
using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Compression;
using MessagePack;
using NativeWebSocket;
using UnityEngine;

[MessagePackObject]
public class EeictPlayer
{
    [Key("sid")] public ulong Sid;
    [Key("name")] public string Name;
    [Key("team")] public string Team;
    [Key("hp")] public int Hp;
    [Key("x")] public float X;
    [Key("y")] public float Y;
    [Key("z")] public float Z;
    [Key("view_x")] public float Yaw;   // degrees, 0 = +x, counter-clockwise
    [Key("view_y")] public float Pitch;
    [Key("actv_itm")] public string ActiveItem;

    // CS2 is Z-up; Unity is Y-up: swap Y and Z.
    public Vector3 UnityPosition => new Vector3(X, Z, Y);
}

[MessagePackObject]
public class EeictFrame
{
    [Key("tick")] public int Tick;
    [Key("round_time")] public float RoundTime;
    [Key("round_start")] public bool RoundStart;
    [Key("is_freeze")] public bool IsFreeze;
    [Key("t_wins")] public int TWins;
    [Key("ct_wins")] public int CtWins;
    [Key("players")] public List<EeictPlayer> Players;  // alive players only
}

// Server messages: one class with every field the client reads; MessagePack-CSharp skips the rest.
// `stream` is a string in most messages but a map in hello, so hello has its own class.
[MessagePackObject]
public class EeictMessage
{
    [Key("type")] public string Type;
    [Key("seq")] public long Seq;
    [Key("frames")] public List<EeictFrame> Frames;      // ticks, plain
    [Key("count")] public int Count;                     // ticks, compressed: frames in data
    [Key("encoding")] public string Encoding;            // ticks, compressed: "deflate"
    [Key("data")] public byte[] Data;                    // ticks, compressed: raw DEFLATE of the frames array
    [Key("to_seq")] public long ToSeq;                   // skip: the next frame you get
    [Key("skipped")] public long? Skipped;               // skip (nil when not countable)
    [Key("reason")] public string Reason;                // skip
    [Key("code")] public string Code;                    // error
    [Key("message")] public string Message;              // error
}

[MessagePackObject]
public class EeictStreamInfo
{
    [Key("id")] public string Id;
    [Key("rate")] public double Rate;    // frames per second (64 / --every)
    [Key("epoch")] public double Epoch;  // server Unix time of seq 0; changes when the server restarts
}

[MessagePackObject]
public class EeictHello
{
    [Key("server_time")] public double ServerTime;
    [Key("max_buffer")] public int MaxBuffer;
    [Key("stream")] public EeictStreamInfo Stream;
}

public class EeictStreamClient : MonoBehaviour
{
    public string serverUrl = "ws://127.0.0.1:8080";
    public string stream = "generated";
    public float bufferSeconds = 1f;
    public bool compressed = true;  // ask for raw-DEFLATE bursts (?encoding=deflate): ~1/10 the bytes

    public EeictFrame Current { get; private set; }  // the frame on screen

    WebSocket socket;
    readonly Queue<(long Seq, EeictFrame Frame)> buffer = new Queue<(long, EeictFrame)>();
    double rate = 64;    // hello.stream.rate
    double epoch = -1;   // hello.stream.epoch
    double offset;       // server clock minus ours (hello.server_time)
    long lastSeq = -1;   // last seq received: where a reconnect resumes

    static double UnixNow() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    async void Start()
    {
        var query = compressed ? "?encoding=deflate" : "";
        socket = new WebSocket($"{serverUrl.TrimEnd('/')}/live/{stream}{query}");
        socket.OnMessage += OnMessage;
        socket.OnError += error => Debug.LogWarning($"EEICT: {error}");
        socket.OnClose += code => Debug.Log($"EEICT: closed ({code})");
        await socket.Connect();
    }

    void OnMessage(byte[] data)
    {
        var msg = MessagePackSerializer.Deserialize<EeictMessage>(data, Options);
        switch (msg.Type)
        {
            case "hello":
                var hello = MessagePackSerializer.Deserialize<EeictHello>(data, Options);
                if (hello.Stream.Epoch != epoch)  // the server restarted: seqs start over
                {
                    lastSeq = -1;
                    buffer.Clear();
                }
                epoch = hello.Stream.Epoch;
                rate = hello.Stream.Rate;
                offset = hello.ServerTime - UnixNow();
                var subscribe = new Dictionary<string, object>
                {
                    ["type"] = "subscribe",
                    ["buffer"] = Math.Min(hello.MaxBuffer, (int)Math.Round(bufferSeconds * rate)),
                };
                if (lastSeq >= 0) subscribe["resume_seq"] = lastSeq + 1;  // after a reconnect
                socket.Send(MessagePackSerializer.Serialize(subscribe));
                break;
            case "ticks":
                var frames = msg.Frames ?? Inflate(msg);
                for (var i = 0; i < frames.Count; i++)
                {
                    var seq = msg.Seq + i;
                    if (seq <= lastSeq) continue;  // already have it
                    buffer.Enqueue((seq, frames[i]));
                    lastSeq = seq;
                }
                break;
            case "skip":  // moved to the live edge: drop what is queued, the next frame is to_seq
                Debug.Log($"EEICT: skipped {msg.Skipped?.ToString() ?? "uncounted"} frames ({msg.Reason})");
                buffer.Clear();
                lastSeq = msg.ToSeq - 1;
                break;
            case "end":
                Debug.Log("EEICT: end of stream");
                break;
            case "error":
                Debug.LogWarning($"EEICT error {msg.Code}: {msg.Message}");
                break;
        }
    }

    // Compressed ticks: data is raw DEFLATE (RFC 1951, no zlib header: what DeflateStream reads)
    // of one msgpack array of Count frames.
    static List<EeictFrame> Inflate(EeictMessage msg)
    {
        if (msg.Encoding != "deflate")
            throw new InvalidDataException($"ticks in an unknown encoding: {msg.Encoding}");
        using var input = new MemoryStream(msg.Data);
        using var inflater = new DeflateStream(input, CompressionMode.Decompress);
        using var output = new MemoryStream();
        inflater.CopyTo(output);
        var frames = MessagePackSerializer.Deserialize<List<EeictFrame>>(output.ToArray(), Options);
        if (frames.Count != msg.Count)
            throw new InvalidDataException($"ticks say {msg.Count} frames but hold {frames.Count}");
        return frames;
    }

    void Update()
    {
#if !UNITY_WEBGL || UNITY_EDITOR
        socket?.DispatchMessageQueue();  // NativeWebSocket delivers messages on the main thread
#endif
        // Frame seq plays at epoch + seq / rate on the server clock, like every subscriber's.
        // Pacing by that clock, not by Time.deltaTime, never drifts behind after a hitch, a
        // clamped deltaTime or a starved buffer: late frames are skipped over, not queued up.
        var playhead = (UnixNow() + offset - epoch) * rate;
        while (buffer.Count > 0 && buffer.Peek().Seq <= playhead)
            Current = buffer.Dequeue().Frame;
        // Drive your scene from Current here, e.g. Current.Players[i].UnityPosition.
    }

    async void OnApplicationQuit()
    {
        if (socket != null) await socket.Close();
    }
}
